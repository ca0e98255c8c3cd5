using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Training;

namespace Optimum.Inference;

/// <summary>How to pick tokens.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>0 = greedy; otherwise sample from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }
    /// <summary>Keep only the k most likely tokens (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1 = all).</summary>
    public double TopP { get; init; } = 1;
    public int Seed { get; init; }
    /// <summary>Stop when this token is produced (it is not returned).</summary>
    public int? EosTokenId { get; init; }
}

/// <summary>
/// A causal language model over a model folder's inference decoder (inference.onnx): the prompt runs
/// once, then one token per step reusing the returned key/value cache. Parameters are bound once.
/// Owns its session; dispose it.
/// </summary>
public sealed class CausalLm : IDisposable
{
    private readonly InferenceSession _session;
    private readonly List<OrtValue> _params = [];
    private readonly string[] _paramNames;
    private readonly int _layers, _heads, _headSize;

    public CausalLm(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        var inputs = ModelFolder.ReadInputs(modelDir, "inference");
        var past = inputs.Where(i => Regex.IsMatch(i.Name, @"^past_key_values\.\d+\.key$")).ToArray();
        if (past.Length == 0) throw new InvalidDataException($"'{modelDir}' has no KV-cache decoder (no past_key_values inputs in optimum.inference).");
        _layers = past.Length;
        _heads = int.Parse(past[0].Shape[1]);
        _headSize = int.Parse(past[0].Shape[3]);
        VocabSize = (int)ps[0].Shape[0];
        using var options = (settings ?? new SessionSettings()).CreateOptions();
        _session = new InferenceSession(Path.Combine(modelDir, ModelFolder.InferenceFile), options);
        _paramNames = ps.Select(p => p.Name).ToArray();
        for (int i = 0; i < ps.Count; i++) _params.Add(OrtValue.CreateTensorValueFromMemory(weights[i], ps[i].Shape));
    }

    public int VocabSize { get; }

    /// <summary>Generates up to MaxNewTokens after <paramref name="prompt"/>; returns only the new tokens.</summary>
    public IReadOnlyList<int> Generate(IReadOnlyList<int> prompt, GenerationOptions o)
    {
        if (prompt.Count == 0) throw new ArgumentException("The prompt needs at least one token.", nameof(prompt));
        var rng = new Random(o.Seed);
        var tokens = prompt.Select(t => (long)t).ToList();
        var generated = new List<int>();
        OrtValue[]? cache = null;
        IDisposableReadOnlyCollection<OrtValue>? previous = null;
        try
        {
            long[] step = [.. tokens];
            for (int n = 0; n < o.MaxNewTokens; n++)
            {
                int past = tokens.Count - step.Length;
                var names = new List<string>(_paramNames);
                var values = new List<OrtValue>(_params);
                var owned = new List<OrtValue>
                {
                    OrtValue.CreateTensorValueFromMemory(step, [1, step.Length]),
                    OrtValue.CreateTensorValueFromMemory(Enumerable.Range(past, step.Length).Select(i => (long)i).ToArray(), [1, step.Length]),
                    OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, tokens.Count).ToArray(), [1, tokens.Count]),
                };
                names.AddRange(["input_ids", "position_ids", "attention_mask"]);
                values.AddRange(owned);
                for (int l = 0; l < _layers; l++)
                    foreach (var (kind, k) in new[] { ("key", 0), ("value", 1) })
                    {
                        names.Add($"past_key_values.{l}.{kind}");
                        if (cache is null)
                        {
                            var empty = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, _heads, 0, _headSize]);
                            owned.Add(empty);
                            values.Add(empty);
                        }
                        else values.Add(cache[2 * l + k]);
                    }
                var outNames = new List<string> { "logits" };
                for (int l = 0; l < _layers; l++) outNames.AddRange([$"present.{l}.key", $"present.{l}.value"]);
                using var run = new RunOptions();
                var results = _session.Run(run, names, values, outNames);
                foreach (var v in owned) v.Dispose();
                previous?.Dispose();
                previous = results;
                cache = results.Skip(1).ToArray();
                var logits = results[0].GetTensorDataAsSpan<float>();
                var last = logits.Slice(logits.Length - VocabSize, VocabSize);
                int next = Sampling.Pick(last, o, rng);
                if (next == o.EosTokenId) break;
                generated.Add(next);
                tokens.Add(next);
                step = [next];
            }
        }
        finally
        {
            previous?.Dispose();
        }
        return generated;
    }

    public void Dispose()
    {
        _session.Dispose();
        foreach (var p in _params) p.Dispose();
    }
}

/// <summary>Greedy, temperature, top-k and top-p choice of the next token.</summary>
public static class Sampling
{
    public static int Pick(ReadOnlySpan<float> logits, GenerationOptions o, Random rng)
    {
        if (o.Temperature <= 0)
        {
            int best = 0;
            for (int k = 1; k < logits.Length; k++) if (logits[k] > logits[best]) best = k;
            return best;
        }
        var order = Enumerable.Range(0, logits.Length).ToArray();
        var scaled = new double[logits.Length];
        for (int k = 0; k < logits.Length; k++) scaled[k] = logits[k] / o.Temperature;
        Array.Sort(scaled.Select(v => -v).ToArray(), order);
        int keep = o.TopK > 0 ? Math.Min(o.TopK, order.Length) : order.Length;
        double max = scaled[order[0]], total = 0;
        var probs = new double[keep];
        for (int i = 0; i < keep; i++) total += probs[i] = Math.Exp(scaled[order[i]] - max);
        if (o.TopP < 1)
        {
            double cum = 0;
            int cut = keep;
            for (int i = 0; i < keep; i++) { cum += probs[i] / total; if (cum >= o.TopP) { cut = i + 1; break; } }
            keep = cut;
            total = probs.Take(keep).Sum();
        }
        double u = rng.NextDouble() * total;
        for (int i = 0; i < keep; i++) { u -= probs[i]; if (u <= 0) return order[i]; }
        return order[keep - 1];
    }
}
