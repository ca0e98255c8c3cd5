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
        return new InferenceSession(model.ToByteArray(), options);
    }
}
