using Google.Protobuf;
using Optimum.Onnx.Proto;
using Optimum.Core;

namespace Optimum.Onnx;

/// <summary>The ONNX versions every model we write declares.</summary>
public static class OnnxVersions
{
    /// <summary>IR version 9 (ONNX 1.14), read by ONNX Runtime 1.31.</summary>
    public const long IrVersion = 9;
    /// <summary>ai.onnx opset 18, what a graph imports unless it needs a newer op: Reduce* take axes as an input; LayerNormalization exists (17).</summary>
    public const long Opset = 18;
    /// <summary>
    /// ai.onnx opset 20, imported by graphs that use Gelu (<see cref="GraphBuilder.Opset"/>). Not the default: ORT runs
    /// some double-precision ops (Elu, Softplus) only through their opset-18 function bodies.
    /// </summary>
    public const long GeluOpset = 20;
    /// <summary>Marks a graph input as a trainable parameter in its <c>doc_string</c>.</summary>
    internal const string ParameterDoc = "parameter";
}

/// <summary>
/// Serialises a <see cref="GraphBuilder"/> to an ONNX <see cref="ModelProto"/>. Only nodes that
/// contribute to the outputs are written, with their inferred types and shapes as value_info; every
/// declared input is kept so the signature is stable. Identical graphs give identical bytes.
/// </summary>
public static class ModelWriter
{
    /// <summary>Converts the graph; <paramref name="metadata"/> entries are written sorted by key.</summary>
    public static ModelProto ToProto(GraphBuilder graph, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (graph.Outputs.Count == 0) throw new GraphBuildException($"Graph '{graph.Name}' has no outputs.");
        var nodes = LiveNodes(graph);
        var g = new GraphProto { Name = graph.Name };
        var used = new HashSet<Value>(nodes.SelectMany(n => n.Inputs).OfType<Value>());
        used.UnionWith(graph.Outputs);
        foreach (var v in graph.Inputs)
            g.Input.Add(Info(v, v.Kind == ValueKind.Parameter ? OnnxVersions.ParameterDoc : ""));
        foreach (var c in graph.Constants.Where(used.Contains))
            g.Initializer.Add(ToTensor(c.Data!, c.Name));
        foreach (var n in nodes)
        {
            g.Node.Add(ToNode(n));
            foreach (var o in n.Outputs)
                if (!graph.Outputs.Contains(o) && o.Type != DType.Undefined) g.ValueInfo.Add(Info(o, ""));
        }
        foreach (var o in graph.Outputs) g.Output.Add(Info(o, ""));

        var model = new ModelProto
        {
            IrVersion = OnnxVersions.IrVersion,
            ProducerName = "Optimum.Net",
            ProducerVersion = "0.1",
            DocString = graph.DocString,
            Graph = g,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = graph.Opset });
        foreach (var d in nodes.Select(n => n.Domain).Where(d => d != "").Distinct().Order(StringComparer.Ordinal))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = d, Version = graph.DomainVersions.GetValueOrDefault(d, 1) });
        var meta = new SortedDictionary<string, string>(graph.Metadata, StringComparer.Ordinal);
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        foreach (var (k, v) in meta)
            model.MetadataProps.Add(new StringStringEntryProto { Key = k, Value = v });
        return model;
    }

    /// <summary>Serialises to bytes.</summary>
    public static byte[] ToBytes(GraphBuilder graph, IReadOnlyDictionary<string, string>? metadata = null) =>
        ToProto(graph, metadata).ToByteArray();

    /// <summary>Writes the model to <paramref name="path"/> atomically (temporary file, then rename).</summary>
    public static void Save(GraphBuilder graph, string path, IReadOnlyDictionary<string, string>? metadata = null) =>
        AtomicFile.Write(path, ToBytes(graph, metadata));

    /// <summary>The nodes the outputs depend on, in graph order.</summary>
    internal static List<Node> LiveNodes(GraphBuilder graph)
    {
        var live = new HashSet<Node>();
        var stack = new Stack<Value>(graph.Outputs);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (v.Producer is { } p && live.Add(p))
                foreach (var i in p.Inputs) if (i is not null) stack.Push(i);
        }
        return graph.Nodes.Where(live.Contains).ToList();
    }

    private static ValueInfoProto Info(Value v, string doc)
    {
        var shape = new TensorShapeProto();
        foreach (var d in v.Shape)
        {
            var dim = new TensorShapeProto.Types.Dimension();
            if (d.IsStatic) dim.DimValue = d.Value;
            else if (d.IsSymbolic) dim.DimParam = d.ToString();
            shape.Dim.Add(dim);
        }
        return new ValueInfoProto
        {
            Name = v.Name,
            DocString = doc,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)v.Type, Shape = shape } },
        };
    }

    private static NodeProto ToNode(Node n)
    {
        var p = new NodeProto { Name = n.Name, OpType = n.OpType, Domain = n.Domain };
        foreach (var i in n.Inputs) p.Input.Add(i?.Name ?? "");
        foreach (var o in n.Outputs) p.Output.Add(o.Name);
        foreach (var (name, a) in n.Attributes) p.Attribute.Add(ToAttribute(name, a));
        return p;
    }

    private static AttributeProto ToAttribute(string name, AttrValue a)
    {
        var p = new AttributeProto { Name = name, Type = (AttributeProto.Types.AttributeType)(int)a.Kind };
        switch (a.Kind)
        {
            case AttrKind.Int: p.I = a.Int; break;
            case AttrKind.Float: p.F = a.Float; break;
            case AttrKind.String: p.S = ByteString.CopyFromUtf8(a.String); break;
            case AttrKind.Tensor: p.T = ToTensor(a.Tensor!, ""); break;
            case AttrKind.Ints: p.Ints.AddRange(a.Ints); break;
            case AttrKind.Floats: p.Floats.AddRange(a.Floats); break;
        }
        return p;
    }

    internal static TensorProto ToTensor(TensorData t, string name)
    {
        var p = new TensorProto { Name = name, DataType = (int)t.Type, RawData = ByteString.CopyFrom(t.Raw) };
        p.Dims.AddRange(t.Dims);
        return p;
    }
}
