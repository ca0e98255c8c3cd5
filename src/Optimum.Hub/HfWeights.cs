using System.Text.Json;
using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Onnx;

namespace Optimum.Hub;

/// <summary>Moving parameters between flat float arrays (graph parameter order) and HF safetensors checkpoints.</summary>
public static class HfWeights
{
    /// <summary>Buffers some HF checkpoints carry that no graph reads (old GPT-2 causal masks, BatchNorm's batch counter).</summary>
    private static bool IsBuffer(string name) => name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)
        || name.EndsWith(".num_batches_tracked", StringComparison.Ordinal);

    /// <summary>
    /// Reads the parameters <paramref name="parameters"/> from an HF checkpoint, converting F16/BF16 to
    /// float. Keys saved from the base model (without the <c>transformer.</c> prefix) are accepted. A
    /// missing tensor, a wrong shape, an integer dtype or a non-finite value is refused naming the file and the tensor. Returns the names of
    /// checkpoint tensors that were not used (other than known buffers) in <paramref name="unused"/>.
    /// </summary>
    public static float[][] Load(string path, IReadOnlyList<ParameterInfo> parameters, out IReadOnlyList<string> unused)
    {
        using var f = SafeTensorsFile.Open(path);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var result = parameters.Select(p =>
        {
            var key = f.Contains(p.Name) ? p.Name
                : p.Name.StartsWith("transformer.", StringComparison.Ordinal) && f.Contains(p.Name["transformer.".Length..]) ? p.Name["transformer.".Length..]
                : throw new InvalidDataException($"{path}: checkpoint has no tensor '{p.Name}'.");
            var (type, shape) = f.Info(key);
            if (!shape.SequenceEqual(p.Shape))
                throw new InvalidDataException($"{path}: tensor '{key}' has shape [{string.Join(", ", shape)}], the model needs [{string.Join(", ", p.Shape)}].");
            if (type is not (DType.Float or DType.Float16 or DType.BFloat16 or DType.Double))
                throw new InvalidDataException($"{path}: tensor '{key}' is {type.Name()}; a parameter must be floating-point (F32, F16, BF16 or F64).");
            used.Add(key);
            var values = f.Read(key).ToFloats();
            // A NaN or infinite weight (or an F64 one beyond float32's range) is corrupt input: refused here rather than as a diverging first step.
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0)
                throw new InvalidDataException($"{path}: tensor '{key}' holds {values[bad].ToString(System.Globalization.CultureInfo.InvariantCulture)} at element {bad} (as float32); weights must be finite.");
            return values;
        }).ToArray();
        unused = f.Names.Where(n => !used.Contains(n) && !IsBuffer(n)).ToArray();
        return result;
    }

    /// <summary>Writes parameters as an F32 safetensors checkpoint with HF names (atomically), skipping <paramref name="skip"/>.</summary>
    public static void Save(string path, IReadOnlyList<ParameterInfo> parameters, IReadOnlyList<float[]> weights, Func<string, bool>? skip = null)
    {
        if (weights.Count != parameters.Count) throw new ArgumentException($"{weights.Count} weight arrays for {parameters.Count} parameters.");
        for (int i = 0; i < parameters.Count; i++)
            if (weights[i].LongLength != parameters[i].Count) throw new ArgumentException($"Parameter '{parameters[i].Name}' has {weights[i].LongLength} values, expected {parameters[i].Count}.");
        Save(path, parameters, i => weights[i], skip);
    }

    /// <summary>
    /// Writes parameters as <see cref="Save(string, IReadOnlyList{ParameterInfo}, IReadOnlyList{float[]}, Func{string, bool}?)"/> does, the
    /// values of parameter i being <paramref name="weights"/>(i) at the moment it is written: views of a flat buffer are streamed
    /// to the file without a copy of the whole model. A span of the wrong length is refused naming the parameter.
    /// </summary>
    public static void Save(string path, IReadOnlyList<ParameterInfo> parameters, Func<int, ReadOnlySpan<float>> weights, Func<string, bool>? skip = null)
    {
        var tensors = parameters.Select((p, i) => SafeTensorSource.Floats(p.Name, p.Shape, () =>
        {
            var w = weights(i);
            if (w.Length != p.Count) throw new ArgumentException($"Parameter '{p.Name}' has {w.Length} values, expected {p.Count}.");
            return w;
        })).Where(t => skip is null || !skip(t.Name));
        SafeTensorsFile.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>Standard normal samples from a seeded generator (Box-Muller), scaled by <paramref name="std"/>.</summary>
    public static float[] Normal(Random rng, long count, double std)
    {
        var r = new float[count];
        Normal(rng, r, std);
        return r;
    }

    /// <summary>Fills <paramref name="into"/> with standard normal samples (pairs u1, u2 → √(−2 ln(1 − u1))·(cos 2πu2, sin 2πu2)) scaled by <paramref name="std"/>.</summary>
    public static void Normal(Random rng, Span<float> into, double std = 1)
    {
        for (int i = 0; i < into.Length; i += 2)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble(), m = Math.Sqrt(-2 * Math.Log(u1)) * std;
            into[i] = (float)(m * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < into.Length) into[i + 1] = (float)(m * Math.Sin(2 * Math.PI * u2));
        }
    }

    /// <summary>
    /// Writes an HF folder that <c>from_pretrained</c> loads: <paramref name="config"/> as config.json (the
    /// <c>optimum</c> section removed) and model.safetensors (F32, HF names; tensors for which
    /// <paramref name="skip"/> is true are left out, as HF leaves out a tied head). Both files are written atomically.
    /// </summary>
    public static void SaveFolder(string outDir, JsonObject config, IReadOnlyList<ParameterInfo> parameters, IReadOnlyList<float[]> weights, Func<string, bool>? skip = null)
    {
        if (weights.Count != parameters.Count) throw new ArgumentException($"{weights.Count} weight arrays for {parameters.Count} parameters.");
        SaveFolder(outDir, config, parameters, i => weights[i], skip);
    }

    /// <summary>As the overload with arrays, the values of parameter i being <paramref name="weights"/>(i) when it is written (streamed, not copied).</summary>
    public static void SaveFolder(string outDir, JsonObject config, IReadOnlyList<ParameterInfo> parameters, Func<int, ReadOnlySpan<float>> weights, Func<string, bool>? skip = null)
    {
        var cfg = (JsonObject)config.DeepClone();
        cfg.Remove("optimum");
        Directory.CreateDirectory(outDir);
        Save(Path.Combine(outDir, ModelFolder.WeightsFile), parameters, weights, skip);
        AtomicFile.Write(Path.Combine(outDir, ModelFolder.ConfigFile), System.Text.Encoding.UTF8.GetBytes(cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n"));
    }
}
