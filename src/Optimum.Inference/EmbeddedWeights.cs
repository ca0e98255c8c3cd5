using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Onnx.Proto;
using Optimum.Core;

namespace Optimum.Inference;

/// <summary>
/// Inference sessions whose parameters are the graph's initializers: the weights are written into the
/// model (in memory) in place of its parameter inputs, so ONNX Runtime treats them as constants
/// (pre-packed matrices, folded transposes) and each token streams the weights once. Public for
/// callers that drive a model folder's graph themselves (the benches); the caller disposes the session.
/// </summary>
public static class EmbeddedWeights
{
    /// <summary>A protobuf message must stay under 2 GB; larger models keep their weights as bound inputs.</summary>
    public const long MaxBytes = 1_800_000_000;

    public static bool Fits(IReadOnlyList<ParameterInfo> ps) => ps.Sum(p => p.Count) * sizeof(float) < MaxBytes;

    public static InferenceSession Open(string path, IReadOnlyList<ParameterInfo> ps, IReadOnlyList<float[]> weights, SessionOptions options)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"'{path}' does not exist.", path);
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)); }
        catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"'{path}' is not a readable ONNX model (truncated or corrupted?): {e.Message}", e); }
        var inputs = model.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var parameters = ps.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var keep = model.Graph.Input.Where(i => !parameters.Contains(i.Name)).ToArray();
        model.Graph.Input.Clear();
        model.Graph.Input.AddRange(keep);
        for (int i = 0; i < ps.Count; i++)
        {
            if (!inputs.Contains(ps[i].Name)) continue;
            var t = new TensorProto { Name = ps[i].Name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weights[i].AsSpan())) };
            t.Dims.AddRange(ps[i].Shape);
            model.Graph.Initializer.Add(t);
        }
        ElideOutputIdentities(model.Graph);
        return new InferenceSession(model.ToByteArray(), options);
    }

    /// <summary>
    /// Removes the Identity nodes that only rename a computed value as a graph output (the graph builder names outputs that
    /// way: <c>present.{i}.key</c> = Identity(Concat)): the producer writes the output name itself. ORT cannot alias such an
    /// Identity when its input also feeds other nodes, so each one copied its tensor on every run: the whole KV cache per
    /// decoding step. The file on disk is unchanged; graphs with subgraphs are left as they are.
    /// </summary>
    internal static void ElideOutputIdentities(GraphProto graph)
    {
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0))) return;
        var outputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var produced = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var o in n.Output) produced[o] = n;
        var rename = new Dictionary<string, string>(StringComparer.Ordinal);
        var elided = new HashSet<NodeProto>();
        foreach (var n in graph.Node)
        {
            if (n.OpType != "Identity" || n.Domain is not ("" or "ai.onnx") || n.Input.Count != 1 || n.Output.Count != 1) continue;
            string x = n.Input[0], y = n.Output[0];
            if (!outputs.Contains(y) || outputs.Contains(x) || !produced.ContainsKey(x) || rename.ContainsKey(x)) continue;
            rename[x] = y;
            elided.Add(n);
        }
        if (rename.Count == 0) return;
        var kept = graph.Node.Where(n => !elided.Contains(n)).ToArray();
        foreach (var n in kept)
        {
            for (int i = 0; i < n.Input.Count; i++) if (rename.TryGetValue(n.Input[i], out var to)) n.Input[i] = to;
            for (int i = 0; i < n.Output.Count; i++) if (rename.TryGetValue(n.Output[i], out var to)) n.Output[i] = to;
        }
        graph.Node.Clear();
        graph.Node.AddRange(kept);
        var info = graph.ValueInfo.Where(v => !rename.ContainsKey(v.Name)).ToArray();        // the outputs carry their own types
        graph.ValueInfo.Clear();
        graph.ValueInfo.AddRange(info);
    }
}
