using Optimum.Onnx;
using Optimum.Tests;
using Optimum.Onnx.Proto;
using Xunit;

namespace Optimum.Onnx.Tests;

/// <summary>Model files: versions, determinism, write → read → write, and what ORT makes of them.</summary>
public sealed class SerializationTests
{
    private static IEnumerable<GraphBuilder> AllCaseGraphs(bool withGradients) => GradientRuleCases.All.Select(c =>
        GradCheck.Graph(c, c.Inputs.Select(i => i.Values ?? Enumerable.Range(0, (int)i.Dims.Aggregate(1L, (a, b) => a * b)).Select(k => 0.1 * k).ToArray()).ToArray(), withGradients));

    [Fact]
    public void Models_DeclareIrVersionAndAiOnnxOpset()
    {
        foreach (var g in AllCaseGraphs(true).Take(3))
        {
            var m = ModelWriter.ToProto(g);
            Assert.Equal(9, m.IrVersion);
            Assert.Contains(m.OpsetImport, o => o.Domain == "" && o.Version == 18);
        }
    }

    [Fact]
    public void WriteReadWrite_IsByteIdentical_ForEveryTrainingGraph()
    {
        foreach (var g in AllCaseGraphs(true))
        {
            var bytes = ModelWriter.ToBytes(g);
            var again = ModelWriter.ToBytes(ModelReader.FromBytes(bytes));
            Assert.True(bytes.AsSpan().SequenceEqual(again), $"Round trip of graph '{g.Name}' changed its bytes.");
        }
    }

    [Fact]
    public void SameBuild_GivesSameBytes()
    {
        var a = AllCaseGraphs(true).Select(g => ModelWriter.ToBytes(g)).ToList();
        var b = AllCaseGraphs(true).Select(g => ModelWriter.ToBytes(g)).ToList();
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++) Assert.True(a[i].AsSpan().SequenceEqual(b[i]), $"Graph {i} differs between two builds.");
    }

    [Fact]
    public void ReadGraph_KeepsParametersShapesAndAttributes()
    {
        var g = new GraphBuilder("m");
        var x = g.Input("x", DType.Float, Shape.Of("batch", 4));
        var w = g.Parameter("w", Shape.Of(4, 2));
        g.Output(g.Softmax(g.MatMul(x, w), -1), "probs");
        var r = ModelReader.FromBytes(ModelWriter.ToBytes(g));
        Assert.Equal(["w"], r.Parameters.Select(p => p.Name));
        Assert.Equal(Shape.Of("batch", 2), r.Outputs[0].Shape);
        Assert.Equal(-1, r.Nodes.Single(n => n.OpType == "Softmax").GetInt("axis", 0));
    }

    [Fact]
    public void ReadGraph_KeepsMetadataAndCanBeExtended()
    {
        var g = new GraphBuilder("m") { DocString = "a doc" };
        g.Metadata["author"] = "tests";
        var x = g.Input("x", DType.Float, Shape.Of("batch", 4));
        var w = g.Parameter("w", Shape.Of(4));
        g.Output(g.LayerNormalization(x, w), "y");
        var bytes = ModelWriter.ToBytes(g);
        var r = ModelReader.FromBytes(bytes);
        Assert.Equal("tests", r.Metadata["author"]);
        Assert.Equal(bytes, ModelWriter.ToBytes(r));
        var again = r.LayerNormalization(r.Outputs[0], r.Parameters[0]);        // names of read nodes are reserved
        Assert.Equal(Shape.Of("batch", 4), again.Shape);
    }

    [Fact]
    public void OtherOpsets_AreRefusedRatherThanConverted()
    {
        var m = ModelWriter.ToProto(AllCaseGraphs(false).First());
        m.OpsetImport[0].Version = 13;
        var e = Assert.Throws<GraphBuildException>(() => ModelReader.FromProto(m));
        Assert.Contains("opset 13", e.Message);
    }

    [Fact]
    public void Writer_DropsNodesOutputsDoNotNeed()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of(3));
        _ = g.Exp(x);
        g.Output(g.Neg(x), "y");
        var m = ModelWriter.ToProto(g);
        Assert.Equal(["Neg", "Identity"], m.Graph.Node.Select(n => n.OpType));
    }

    [Fact]
    public void CorruptFile_IsRefusedNamingTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"corrupt-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, [0x08, 0x09, 0x12, 0xff, 0x01, 0x02]);
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ModelReader.Load(path));
            Assert.Contains(path, e.Message);
        }
        finally { File.Delete(path); }
        Assert.Throws<FileNotFoundException>(() => ModelReader.Load(path));
        var noOpset = new ModelProto { IrVersion = 9, Graph = new GraphProto() };
        Assert.Contains("no ai.onnx opset", Assert.Throws<GraphBuildException>(() => ModelReader.FromProto(noOpset)).Message);
    }

    [Fact]
    public void Save_IsAtomicAndLoadable()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"save-{Guid.NewGuid():N}");
        var path = Path.Combine(dir, "m.onnx");
        var g = AllCaseGraphs(false).First();
        ModelWriter.Save(g, path);
        Assert.Equal([path], Directory.GetFiles(dir));
        Assert.Equal(ModelWriter.ToBytes(g), ModelWriter.ToBytes(ModelReader.Load(path)));
        using var ort = new OrtModel(File.ReadAllBytes(path));
        Assert.Equal(["loss"], ort.OutputNames);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void OrtLoads_EveryEmittedTrainingAndEvalGraph()
    {
        foreach (var g in AllCaseGraphs(true).Concat(AllCaseGraphs(false)))
        {
            using var m = new OrtModel(g);
            Assert.Equal(g.Outputs.Select(o => o.Name), m.OutputNames);
        }
    }
}
