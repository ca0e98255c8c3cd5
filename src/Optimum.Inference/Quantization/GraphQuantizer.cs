using System.Runtime.InteropServices;
using Google.Protobuf;
using Optimum.Core;
using Optimum.Onnx.Proto;

namespace Optimum.Inference.Quantization;

/// <summary>
/// Rewrites one inference graph: every <c>MatMul(X, W)</c>, <c>MatMul(X, Transpose(W))</c> (a tied LM head) and
/// <c>Gemm(X, W[, C])</c> whose W is a 2-D parameter input becomes a quantized operator with W's quantized form as
/// initializers. Parameters that no node reads any more leave the graph's inputs; a parameter still read elsewhere
/// (GPT-2's wte also feeds the embedding Gather) stays a float input. Nodes left without consumers (the head's Transpose) are removed.
/// </summary>
internal static class GraphQuantizer
{
    public const string MsDomain = "com.microsoft";

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the parameters it quantized.</summary>
    public static IReadOnlyList<string> Rewrite(ModelProto model, IReadOnlyDictionary<string, (ParameterInfo Info, float[] Weights)> parameters, QuantizeOptions o, string source)
    {
        var g = model.Graph;
        if (g.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
            throw new NotSupportedException($"'{source}': graphs with subgraphs (If/Loop/Scan) are not quantized.");
        var graphInputs = g.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in g.Node) foreach (var y in n.Output) producer[y] = n;
        var done = new Dictionary<string, string[]>(StringComparer.Ordinal);        // (param, transposed) -> initializer names
        var quantized = new List<string>();
        var nodes = new List<NodeProto>();
        foreach (var node in g.Node)
        {
            var w = WeightOf(node);
            if (w is null) { nodes.Add(node); continue; }
            var (name, transposed, bias) = w.Value;
            var (info, values) = parameters[name];
            int k = (int)(transposed ? info.Shape[1] : info.Shape[0]), n = (int)(transposed ? info.Shape[0] : info.Shape[1]);
            var key = $"{name}|{transposed}";
            if (!done.TryGetValue(key, out var inits))
            {
                inits = AddInitializers(g, name, transposed ? values : Transpose(values, k, n), values, n, k, transposed, o);
                done[key] = inits;
                if (!quantized.Contains(name)) quantized.Add(name);
            }
            var output = node.Output[0];
            var mm = bias is null ? output : $"{output}.nobias";
            nodes.Add(QuantizedNode(node, mm, inits, k, n, o));
            if (bias is not null) nodes.Add(new NodeProto { Name = $"{node.Name}.bias", OpType = "Add", Input = { mm, bias }, Output = { output } });
        }
        g.Node.Clear();
        g.Node.AddRange(RemoveDead(nodes, g.Output.Select(v => v.Name)));
        var read = g.Node.SelectMany(n => n.Input).Concat(g.Output.Select(v => v.Name)).ToHashSet(StringComparer.Ordinal);
        var kept = g.Input.Where(i => read.Contains(i.Name) || !parameters.ContainsKey(i.Name)).ToArray();
        g.Input.Clear();
        g.Input.AddRange(kept);
        if (quantized.Count > 0 && !model.OpsetImport.Any(op => op.Domain == MsDomain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MsDomain, Version = 1 });
        return quantized;

        // The parameter a node multiplies by on the right, if it is one this rewrite handles.
        (string Name, bool Transposed, string? Bias)? WeightOf(NodeProto node)
        {
            if (node.Domain is not ("" or "ai.onnx") || node.Output.Count != 1) return null;
            if (node.OpType == "MatMul" && node.Input.Count == 2)
            {
                var b = node.Input[1];
                if (IsMatrix(b)) return (b, false, null);
                if (producer.TryGetValue(b, out var t) && t.OpType == "Transpose" && (t.Domain is "" or "ai.onnx") && IsMatrix(t.Input[0])
                    && (t.Attribute.FirstOrDefault(a => a.Name == "perm") is not { } perm || perm.Ints.SequenceEqual([1L, 0L])))
                    return (t.Input[0], true, null);
                return null;
            }
            if (node.OpType == "Gemm" && node.Input.Count >= 2 && IsMatrix(node.Input[1]))
            {
                long Attr(string a, long dflt) => node.Attribute.FirstOrDefault(x => x.Name == a)?.I ?? dflt;
                float F(string a) => node.Attribute.FirstOrDefault(x => x.Name == a)?.F ?? 1f;
                if (Attr("transA", 0) != 0 || F("alpha") != 1f || F("beta") != 1f) return null;
                return (node.Input[1], Attr("transB", 0) != 0, node.Input.Count > 2 && node.Input[2] != "" ? node.Input[2] : null);
            }
            return null;
        }

        bool IsMatrix(string v) => graphInputs.Contains(v) && parameters.TryGetValue(v, out var p) && p.Info.Shape.Length == 2;
    }

    private static string[] AddInitializers(GraphProto g, string name, float[] wt, float[] w, int n, int k, bool transposed, QuantizeOptions o)
    {
        var stem = transposed ? $"{name}.T" : name;
        if (o.PerColumn)
        {
            var q = ColumnQuantizer.Quantize(wt, n, k, o.ReduceRange);
            g.Initializer.Add(Tensor($"{stem}.qweight", TensorProto.Types.DataType.Int8, [k, n], MemoryMarshal.AsBytes(q.Codes.AsSpan())));
            g.Initializer.Add(Tensor($"{stem}.scales", TensorProto.Types.DataType.Float, [n], MemoryMarshal.AsBytes(q.Scales.AsSpan())));
            return [$"{stem}.qweight", $"{stem}.scales"];
        }
        var m = BlockQuantizer.Quantize(wt, n, k, o.Bits, o.BlockSize, o.ZeroPoints);
        g.Initializer.Add(Tensor($"{stem}.qweight", TensorProto.Types.DataType.Uint8, [n, m.BlocksPerRow, m.BlobSize], m.Packed));
        g.Initializer.Add(Tensor($"{stem}.scales", TensorProto.Types.DataType.Float, [m.Scales.Length], MemoryMarshal.AsBytes(m.Scales.AsSpan())));
        if (m.ZeroPoints is null) return [$"{stem}.qweight", $"{stem}.scales"];
        g.Initializer.Add(Tensor($"{stem}.zero_points", TensorProto.Types.DataType.Uint8, [m.ZeroPoints.Length], m.ZeroPoints));
        return [$"{stem}.qweight", $"{stem}.scales", $"{stem}.zero_points"];
    }

    private static NodeProto QuantizedNode(NodeProto node, string output, string[] inits, int k, int n, QuantizeOptions o)
    {
        var name = string.IsNullOrEmpty(node.Name) ? output : node.Name;
        if (o.PerColumn)
            return new NodeProto { Name = $"{name}.q8", OpType = "DynamicQuantizeMatMul", Domain = MsDomain, Input = { node.Input[0], inits[0], inits[1] }, Output = { output } };
        var q = new NodeProto { Name = $"{name}.q{o.Bits}", OpType = "MatMulNBits", Domain = MsDomain, Input = { node.Input[0] }, Output = { output } };
        q.Input.AddRange(inits);
        // Sorted, as the graph builder writes attributes.
        q.Attribute.Add(Int("K", k));
        q.Attribute.Add(Int("N", n));
        q.Attribute.Add(Int("accuracy_level", o.AccuracyLevel));
        q.Attribute.Add(Int("bits", o.Bits));
        q.Attribute.Add(Int("block_size", o.BlockSize));
        return q;
    }

    private static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

    private static TensorProto Tensor(string name, TensorProto.Types.DataType type, long[] dims, ReadOnlySpan<byte> data)
    {
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(data) };
        t.Dims.AddRange(dims);
        return t;
    }

    /// <summary>[K, N] row-major to [N, K].</summary>
    internal static float[] Transpose(float[] w, int k, int n)
    {
        var t = new float[w.Length];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < n; j++)
                t[(long)j * k + i] = w[(long)i * n + j];
        return t;
    }

    private static List<NodeProto> RemoveDead(List<NodeProto> nodes, IEnumerable<string> outputs)
    {
        var live = new HashSet<string>(outputs, StringComparer.Ordinal);
        var keep = new bool[nodes.Count];
        for (int i = nodes.Count - 1; i >= 0; i--)               // graph nodes are in topological order
        {
            if (!nodes[i].Output.Any(live.Contains)) continue;
            keep[i] = true;
            foreach (var x in nodes[i].Input) live.Add(x);
        }
        return nodes.Where((_, i) => keep[i]).ToList();
    }
}

/// <summary>Int8 per output column, symmetric (scale = max|w| / 127, or / 63 reduced), for <c>com.microsoft.DynamicQuantizeMatMul</c>: codes [K, N].</summary>
public sealed record ColumnQuantized(int N, int K, sbyte[] Codes, float[] Scales)
{
    /// <summary>The weights back as floats, row-major [K, N] (W, as the graph multiplies by it).</summary>
    public float[] Dequantize()
    {
        var w = new float[Codes.Length];
        for (int i = 0; i < Codes.Length; i++) w[i] = Codes[i] * Scales[i % N];
        return w;
    }
}

public static class ColumnQuantizer
{
    /// <summary>
    /// Quantizes <paramref name="wt"/>, row-major [N, K] (Wᵀ), one scale per row of Wᵀ (column of W). With
    /// <paramref name="reduceRange"/> the codes span [-63, 63] (7 bits): ONNX Runtime's u8s8 kernels on x86 without VNNI
    /// add pairs of uint8 × int8 products in int16 (vpmaddubsw), which 2 · 255 · 127 overflows but 2 · 255 · 63 does not.
    /// </summary>
    public static ColumnQuantized Quantize(float[] wt, int n, int k, bool reduceRange = false)
    {
        int qmax = reduceRange ? 63 : 127;
        if (wt.Length != (long)n * k) throw new ArgumentException($"{wt.Length} weights for a [{n}, {k}] matrix.", nameof(wt));
        var codes = new sbyte[wt.Length];
        var scales = new float[n];
        Parallel.For(0, n, j =>
        {
            var r = wt.AsSpan(j * k, k);
            float amax = 0;
            foreach (var v in r) amax = Math.Max(amax, MathF.Abs(v));
            float s = amax / qmax;
            scales[j] = s;
            for (int i = 0; i < k; i++) codes[(long)i * n + j] = s == 0 ? (sbyte)0 : (sbyte)Math.Clamp((int)MathF.Round(r[i] / s), -qmax, qmax);
        });
        return new ColumnQuantized(n, k, codes, scales);
    }
}
