using Optimum.Onnx;
using Optimum.Tests;
using Xunit;

namespace Optimum.Onnx.Tests;

/// <summary>Shape inference (static and symbolic) and the errors bad graphs get at build time.</summary>
public sealed class BuilderTests
{
    [Fact]
    public void ShapeInference_KeepsSymbolicDimsThroughReshapes()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of("batch", "seq", 768));
        var heads = g.Reshape(x, 0, 0, 12, 64);
        Assert.Equal(Shape.Of("batch", "seq", 12, 64), heads.Shape);
        var flat = g.Reshape(x, -1, 768);
        Assert.Equal("batch*seq", flat.Shape[0].ToString());
        var back = g.Reshape(flat, g.ShapeOf(x));
        Assert.Equal(x.Shape, back.Shape);
        var t = g.Transpose(heads, 0, 2, 1, 3);
        Assert.Equal(Shape.Of("batch", 12, "seq", 64), t.Shape);
        var att = g.MatMul(t, g.Transpose(t, 0, 1, 3, 2));
        Assert.Equal(Shape.Of("batch", 12, "seq", "seq"), att.Shape);
        Assert.Equal(Shape.Of("batch", "seq", 1), g.ReduceMean(x, [-1]).Shape);
        Assert.Equal(Shape.Of("batch", "seq", 8), g.Gather(g.Input("wte", DType.Float, Shape.Of(50, 8)), g.Input("ids", DType.Int64, Shape.Of("batch", "seq"))).Shape);
    }

    [Fact]
    public void ShapeInference_StaticOps()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of(2, 3, 8));
        Assert.Equal(Shape.Of(2, 24), g.Flatten(x, 1).Shape);
        Assert.Equal(Shape.Of(2, 3, 3), g.Slice(x, [1], [-2], [2], [2]).Shape);
        Assert.Equal(Shape.Of(2, 6, 8), g.Concat(1, x, x).Shape);
        Assert.Equal([Shape.Of(2, 3, 5), Shape.Of(2, 3, 3)], g.Split(x, -1, 5, 3).Select(v => v.Shape));
        Assert.Equal(Shape.Of(2, 4, 6), g.Conv(x, g.Input("w", DType.Float, Shape.Of(4, 3, 3)), pads: [0, 0]).Shape);
        Assert.Equal(Shape.Of(2, 3, 4), g.MaxPool(x, [2], strides: [2]).Shape);
        Assert.Equal(Shape.Of(2, 1, 3, 1, 8), g.Unsqueeze(x, 1, 3).Shape);
        Assert.Equal(DType.Bool, g.Less(x, x).Type);
        Assert.Equal(Shape.Of(7), g.Range(g.Scalar(0, DType.Int64), g.Scalar(7, DType.Int64), g.Scalar(1, DType.Int64)).Shape);
    }

    [Fact]
    public void ShapeInference_EdgeCasesMatchOnnxSemantics()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of(5));
        var runtimeStep = g.Input("step", DType.Int64, Shape.Of(1));
        Assert.False(g.Slice(x, g.Ints(0), g.Ints(5), g.Ints(0), runtimeStep).Shape[0].IsStatic);        // step unknown: size unknown
        Assert.Equal(Shape.Of(1), g.Slice(x, [-7], [long.MinValue], [0], [-1]).Shape);                   // start clamps to 0 for negative steps
        Assert.Equal(Shape.Of(5), g.Slice(x, [-1], [long.MinValue], [0], [-1]).Shape);
        var p = g.Input("p", DType.Float, Shape.Of(1, 1, 4));
        Assert.Equal(Shape.Of(1, 1, 2), g.MaxPool(p, [2], strides: [2], pads: [0, 1], ceilMode: true).Shape);   // last window would start in padding
        Assert.Equal(Shape.Of(1, 1, 3), g.MaxPool(g.Input("q", DType.Float, Shape.Of(1, 1, 5)), [2], strides: [2], ceilMode: true).Shape);
        var a = g.Constant(TensorData.FromInt64s([1, 2], 2, 1));
        var b = g.Constant(TensorData.FromInt64s([3, 4], 1, 2));
        Assert.Null((a * b).Known);                                                                         // (2,1)*(1,2) is not elementwise
        var r = g.Reshape(g.Input("y", DType.Float, Shape.Of(2, 4)), g.Input("shape", DType.Int64, Shape.Of(2)));
        Assert.True(r.Shape[1].IsAnonymous);
        Assert.Equal(r.Shape, g.LayerNormalization(r, g.Parameter("ln.w", Shape.Of(4))).Shape);               // made-up dims may equal 4
    }

    [Fact]
    public void ShapeMismatch_NamesOpNodeAndBothShapes()
    {
        var g = new GraphBuilder();
        var a = g.Input("a", DType.Float, Shape.Of("batch", 3));
        var b = g.Input("b", DType.Float, Shape.Of(4, 5));
        using (g.Scope("mlp"))
        {
            var e = Assert.Throws<GraphBuildException>(() => a + b);
            Assert.Contains("Add", e.Message);
            Assert.Contains("node 'mlp/Add_", e.Message);
            Assert.Contains("(batch, 3)", e.Message);
            Assert.Contains("(4, 5)", e.Message);
        }
        var m = Assert.Throws<GraphBuildException>(() => g.MatMul(a, b));
        Assert.Contains("MatMul", m.Message);
        Assert.Contains("(batch, 3) @ (4, 5)", m.Message);
        var r = Assert.Throws<GraphBuildException>(() => g.Reshape(b, 3, 3));
        Assert.Contains("Cannot reshape (4, 5)", r.Message);
        var t = Assert.Throws<GraphBuildException>(() => g.Add(a, g.Input("i", DType.Int64, Shape.Of(3))));
        Assert.Contains("float(batch, 3) and int64(3,)", t.Message);
        // A failed op leaves the graph unchanged.
        Assert.Empty(g.Nodes);
    }

    [Fact]
    public void DuplicateNames_AreRefused()
    {
        var g = new GraphBuilder("dup");
        g.Parameter("w", Shape.Of(3));
        var e = Assert.Throws<GraphBuildException>(() => g.Input("w", DType.Float, Shape.Of(3)));
        Assert.Contains("Duplicate name 'w'", e.Message);
        var x = g.Input("x", DType.Float, Shape.Of(3));
        g.Output(x + x, "y");
        Assert.Throws<GraphBuildException>(() => g.Output(x * x, "y"));
    }

    [Fact]
    public void NonScalarLoss_IsRefused()
    {
        var g = new GraphBuilder();
        var w = g.Parameter("w", Shape.Of(3));
        var e = Assert.Throws<GraphBuildException>(() => Autodiff.Gradients(w * w, [w]));
        Assert.Contains("loss must be a floating-point scalar", e.Message);
        Assert.Contains("(3,)", e.Message);
        var i = g.Input("i", DType.Int64, Shape.Of(1));
        Assert.Throws<GraphBuildException>(() => Autodiff.Gradients(g.ReduceSum(w, [], false), [w, w]));
        Assert.Throws<GraphBuildException>(() => Autodiff.Gradients(g.ReduceSum(w, [], false), [i]));
    }

    [Fact]
    public void OpWithoutRule_ThrowsNotSupportedNamingOpAndNode()
    {
        var g = new GraphBuilder();
        var w = g.Parameter("w", Shape.Of(3));
        var loss = g.ReduceSum(g.Floor(w) * w, [], keepDims: false);
        var e = Assert.Throws<NotSupportedException>(() => Autodiff.Gradients(loss, [w]));
        Assert.Contains("No gradient rule for Floor (node 'Floor_", e.Message);
        Assert.Contains("GradientRules", e.Message);
    }

    [Fact]
    public void UnknownOp_IsEmittedButNotDifferentiated()
    {
        var g = new GraphBuilder();
        var w = g.Parameter("w", Shape.Of(2, 3));
        var y = g.Op("FancyGelu", [w], [(DType.Float, w.Shape)], new Dictionary<string, AttrValue> { ["approximate"] = "tanh" }, domain: "com.example")[0];
        var e = Assert.Throws<NotSupportedException>(() => Autodiff.Gradients(g.ReduceSum(y, [], false), [w]));
        Assert.Contains("No gradient rule for FancyGelu (node 'FancyGelu_", e.Message);
        g.Output(y, "y");
        var m = ModelWriter.ToProto(g);
        Assert.Contains(m.OpsetImport, o => o.Domain == "com.example");
        Assert.Equal("tanh", m.Graph.Node[0].Attribute[0].S.ToStringUtf8());
    }

    [Fact]
    public void Autodiff_DifferentiatesOnlyBetweenParametersAndLoss()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of(4));
        var w = g.Parameter("w", Shape.Of(4));
        var unused = g.Parameter("unused", Shape.Of(2));
        var side = g.Floor(x) * 2.0;                    // no rule for Floor, but not on a parameter path
        var loss = g.ReduceSum(w * side, [], keepDims: false);
        g.Output(g.Exp(w), "not_in_loss");               // depends on w but not on the loss
        var before = g.Nodes.Count;
        var grads = Autodiff.Gradients(loss, [w, unused]);
        var added = g.Nodes.Skip(before).Select(n => n.OpType).ToList();
        Assert.DoesNotContain("Exp", added);
        Assert.Equal(Shape.Of(4), grads[0].Shape);
        Assert.Equal("ConstantOfShape", grads[1].Producer!.OpType);   // zeros for a parameter the loss ignores
    }

    [Fact]
    public void ValuesOfAnotherGraph_AreRefused()
    {
        var g1 = new GraphBuilder("one");
        var g2 = new GraphBuilder("two");
        var a = g1.Input("a", DType.Float, Shape.Of(2));
        var b = g2.Input("b", DType.Float, Shape.Of(2));
        var e = Assert.Throws<GraphBuildException>(() => g1.Add(a, b));
        Assert.Contains("belongs to another graph", e.Message);
    }
}
