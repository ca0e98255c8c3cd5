using System.Runtime.InteropServices;
using Google.Protobuf;
using Optimum.Onnx.Proto;

namespace Optimum.Onnx;

/// <summary>
/// Reads ONNX models into a <see cref="GraphBuilder"/>, taking types and shapes from the model's
/// inputs, outputs and value_info (nothing is re-inferred), so write → read → write is byte-identical.
/// </summary>
public static class ModelReader
{
    /// <summary>Reads a model file; a file that is not a valid ONNX model is refused naming the file.</summary>
    public static GraphBuilder Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"ONNX model '{path}' does not exist.", path);
        try { return FromBytes(File.ReadAllBytes(path)); }
        catch (Exception e) when (e is InvalidProtocolBufferException or GraphBuildException)
        {
            throw new InvalidDataException($"'{path}' is not a readable ONNX model: {e.Message}", e);
        }
    }

    public static GraphBuilder FromBytes(byte[] bytes) => FromProto(ModelProto.Parser.ParseFrom(bytes));

    public static GraphBuilder FromProto(ModelProto model)
    {
        var opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")
            ?? throw new GraphBuildException("Model has no ai.onnx opset import.");
        // Op semantics change between opsets (Reduce* axes, Split sizes, Softmax axis), so models are not silently converted.
        if (opset.Version is not (OnnxVersions.Opset or OnnxVersions.GeluOpset))
            throw new GraphBuildException($"Model uses ai.onnx opset {opset.Version}; Optimum.Net reads and writes opsets {OnnxVersions.Opset} and {OnnxVersions.GeluOpset}.");
        var gp = model.Graph ?? throw new GraphBuildException("Model has no graph.");
        var g = new GraphBuilder(gp.Name) { DocString = model.DocString, Opset = opset.Version };
        foreach (var m in model.MetadataProps) g.Metadata[m.Key] = m.Value;
        foreach (var o in model.OpsetImport.Where(o => o.Domain is not ("" or "ai.onnx"))) g.DomainVersions[o.Domain] = o.Version;
        var byName = new Dictionary<string, Value>(StringComparer.Ordinal);
        var infos = gp.ValueInfo.Concat(gp.Output).GroupBy(v => v.Name).ToDictionary(x => x.Key, x => x.First(), StringComparer.Ordinal);

        foreach (var i in gp.Input)
        {
            var (t, s) = TypeOf(i);
            byName[i.Name] = i.DocString == OnnxVersions.ParameterDoc ? g.Parameter(i.Name, s, t) : g.Input(i.Name, t, s);
        }
        foreach (var init in gp.Initializer)
            if (!byName.ContainsKey(init.Name)) byName[init.Name] = g.Constant(FromTensor(init), init.Name);

        foreach (var n in gp.Node)
        {
            var inputs = n.Input.Select(name => name == "" ? null
                : byName.TryGetValue(name, out var v) ? v
                : throw new GraphBuildException($"Node '{n.Name}' ({n.OpType}) reads '{name}', which is not defined before it.")).ToArray();
            var attrs = n.Attribute.ToDictionary(a => a.Name, FromAttribute, StringComparer.Ordinal);
            var outs = n.Output.Select(o => infos.TryGetValue(o, out var info)
                ? (o, TypeOf(info).Type, TypeOf(info).Shape)
                : (o, DType.Undefined, Shape.Scalar)).ToArray();
            foreach (var v in g.AddRaw(n.OpType, n.Name, n.Domain, inputs, attrs, outs)) byName[v.Name] = v;
        }
        foreach (var o in gp.Output)
            g.Output(byName.TryGetValue(o.Name, out var v) ? v : throw new GraphBuildException($"Graph output '{o.Name}' is not produced by any node."));
        return g;
    }

    private static (DType Type, Shape Shape) TypeOf(ValueInfoProto info)
    {
        var t = info.Type?.TensorType ?? throw new GraphBuildException($"Value '{info.Name}' is not a tensor.");
        var dims = t.Shape?.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => Dim.Of(d.DimValue),
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => Dim.Parse(d.DimParam),
            _ => Dim.Unknown,
        }) ?? [];
        return ((DType)t.ElemType, new Shape(dims));
    }

    private static AttrValue FromAttribute(AttributeProto a) => a.Type switch
    {
        AttributeProto.Types.AttributeType.Int => AttrValue.Of(a.I),
        AttributeProto.Types.AttributeType.Float => AttrValue.Of(a.F),
        AttributeProto.Types.AttributeType.String => AttrValue.Of(a.S.ToStringUtf8()),
        AttributeProto.Types.AttributeType.Tensor => AttrValue.Of(FromTensor(a.T)),
        AttributeProto.Types.AttributeType.Ints => AttrValue.Of(a.Ints.ToArray()),
        AttributeProto.Types.AttributeType.Floats => AttrValue.Of(a.Floats.ToArray()),
        _ => throw new GraphBuildException($"Attribute '{a.Name}' has unsupported type {a.Type}."),
    };

    /// <summary>Reads a tensor from raw_data or the typed fields; external data is refused.</summary>
    public static TensorData FromTensor(TensorProto t)
    {
        var type = (DType)t.DataType;
        var dims = t.Dims.ToArray();
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new GraphBuildException($"Tensor '{t.Name}' uses external data, which is not supported.");
        byte[] raw = t.RawData.Length > 0 || CountOf(dims) == 0 ? t.RawData.ToByteArray() : type switch
        {
            DType.Float => MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray(),
            DType.Double => MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).ToArray(),
            DType.Int64 => MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).ToArray(),
            DType.Int32 => MemoryMarshal.AsBytes(t.Int32Data.ToArray().AsSpan()).ToArray(),
            DType.Bool or DType.UInt8 or DType.Int8 => t.Int32Data.Select(i => (byte)i).ToArray(),
            DType.Float16 or DType.BFloat16 => t.Int32Data.SelectMany(i => BitConverter.GetBytes((ushort)i)).ToArray(),
            _ => throw new GraphBuildException($"Tensor '{t.Name}' has unsupported type {type}."),
        };
        try { return new TensorData(type, dims, raw); }
        catch (ArgumentException e) { throw new GraphBuildException($"Tensor '{t.Name}': {e.Message}"); }
    }

    private static long CountOf(long[] dims) => dims.Aggregate(1L, (a, d) => a * d);
}
