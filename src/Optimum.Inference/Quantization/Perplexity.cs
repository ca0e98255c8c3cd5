namespace Optimum.Inference.Quantization;

/// <summary>Perplexity of a causal LM over a token stream: exp of the mean negative log-likelihood of every predicted token.</summary>
public sealed record PerplexityResult(double MeanNll, long Tokens)
{
    public double Perplexity => Math.Exp(MeanNll);
}

/// <summary>Quality measures of a generator, for comparing a quantized folder with its float32 source.</summary>
public static class LmQuality
{
    /// <summary>
    /// Cuts <paramref name="tokens"/> into windows of <paramref name="window"/> tokens (default: the model's positions) and
    /// scores every token of a window after its first from the ones before it in that window (no overlap between windows),
    /// <paramref name="batch"/> windows at a time, one token per decoding step through the KV cache.
    /// A last window shorter than 2 tokens is left out.
    /// </summary>
    public static PerplexityResult Perplexity(IGenerativeModel lm, IReadOnlyList<int> tokens, int window = 0, int batch = 8)
    {
        if (window == 0) window = lm.MaxPositions;
        if (window < 2 || window > lm.MaxPositions) throw new ArgumentOutOfRangeException(nameof(window), window, $"A window is 2 to {lm.MaxPositions} tokens (the model's positions).");
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), batch, "At least one window per batch.");
        var windows = new List<int[]>();
        for (int s = 0; s + 2 <= tokens.Count; s += window) windows.Add(tokens.Skip(s).Take(window).ToArray());
        if (windows.Count == 0) throw new ArgumentException($"{tokens.Count} tokens: perplexity needs at least 2.", nameof(tokens));
        foreach (var w in windows) foreach (var t in w)
            if (t < 0 || t >= lm.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), t, $"Token id outside the vocabulary of {lm.VocabSize}.");
        double nll = 0;
        long count = 0;
        for (int first = 0; first < windows.Count; first += batch)
        {
            // Windows of one batch have the same length except the stream's last: group it alone.
            var group = windows.Skip(first).Take(batch).ToArray();
            int len = group[0].Length;
            if (group.Any(w => w.Length != len)) { group = group.Where(w => w.Length == len).ToArray(); first -= batch - group.Length; }
            int b = group.Length;
            using var state = lm.Start();
            for (int p = 0; p + 1 < len; p++)
            {
                var ids = group.Select(w => (long)w[p]).ToArray();
                var pos = Enumerable.Repeat((long)p, b).ToArray();
                var mask = Enumerable.Repeat(1L, b * (p + 1)).ToArray();
                var logits = state.Step(ids, pos, mask, b);
                for (int r = 0; r < b; r++)
                {
                    var row = logits.Slice(r * lm.VocabSize, lm.VocabSize);
                    float max = float.NegativeInfinity;
                    foreach (var v in row) max = Math.Max(max, v);
                    double sum = 0;
                    foreach (var v in row) sum += Math.Exp(v - max);
                    nll += max + Math.Log(sum) - row[group[r][p + 1]];
                    count++;
                }
            }
        }
        return new PerplexityResult(nll / count, count);
    }

    /// <summary>
    /// Greedy continuations of <paramref name="prompt"/> by both models (<paramref name="newTokens"/> each, EOS ignored): the
    /// share of positions where they chose the same token, and the first position where they differ (newTokens when none).
    /// </summary>
    public static (double Agreement, int FirstDifference) GreedyAgreement(IGenerativeModel reference, IGenerativeModel other, IReadOnlyList<int> prompt, int newTokens)
    {
        var o = new GenerationOptions { MaxNewTokens = newTokens, EosTokenId = -1 };
        var a = Generator.Generate(reference, [prompt], o)[0].Tokens;
        var b = Generator.Generate(other, [prompt], o)[0].Tokens;
        int n = Math.Min(a.Count, b.Count), same = 0, firstDiff = n;
        for (int i = 0; i < n; i++)
        {
            if (a[i] == b[i]) same++;
            else if (firstDiff == n) firstDiff = i;
        }
        return ((double)same / Math.Max(1, n), firstDiff);
    }

    /// <summary>
    /// <see cref="GreedyAgreement(IGenerativeModel, IGenerativeModel, IReadOnlyList{int}, int)"/> over several prompts: the share of all
    /// generated positions that agree, and the mean first difference.
    /// </summary>
    public static (double Agreement, double MeanFirstDifference) GreedyAgreement(IGenerativeModel reference, IGenerativeModel other, IReadOnlyList<IReadOnlyList<int>> prompts, int newTokens)
    {
        var r = prompts.Select(p => GreedyAgreement(reference, other, p, newTokens)).ToArray();
        return (r.Average(x => x.Agreement), r.Average(x => (double)x.FirstDifference));
    }
}

/// <summary>
/// A quantized language model against its float32 source on held-out tokens: both perplexities, and the share of greedy
/// tokens equal to float32's (<see cref="Agreement"/>) over <see cref="AgreementTokens"/> generated tokens.
/// </summary>
public sealed record QualityComparison(PerplexityResult Float32, PerplexityResult Quantized, double Agreement, double MeanFirstDifference, int AgreementTokens)
{
    /// <summary>Quantized perplexity over float32's, minus 1 (0.01 = 1% worse).</summary>
    public double PerplexityIncrease => Quantized.Perplexity / Float32.Perplexity - 1;

    /// <summary>
    /// Perplexity of both models over <paramref name="heldOut"/> (at most <paramref name="maxTokens"/> of it), and their greedy
    /// agreement over 256 new tokens: 4 prompts of 16 tokens taken at evenly spaced places of the held-out text, 64 tokens each.
    /// </summary>
    public static QualityComparison Measure(IGenerativeModel float32, IGenerativeModel quantized, IReadOnlyList<int> heldOut, int maxTokens = 16384)
    {
        var tokens = heldOut.Take(maxTokens).ToArray();
        if (tokens.Length < 4 * 16) throw new ArgumentException($"{tokens.Length} held-out tokens: at least 64 are needed.", nameof(heldOut));
        // Each 16-token prompt needs room for at least one new token in both models.
        foreach (var (m, what) in new[] { (float32, "float32"), (quantized, "quantized") })
            if (m.MaxPositions <= 16) throw new ArgumentException($"The {what} model has {m.MaxPositions} positions; the agreement prompts take 16 and need room for new tokens (> 16).", what == "float32" ? nameof(float32) : nameof(quantized));
        int newTokens = Math.Min(64, Math.Min(float32.MaxPositions, quantized.MaxPositions) - 16);
        var prompts = Enumerable.Range(0, 4).Select(i => (IReadOnlyList<int>)tokens.Skip(i * (tokens.Length - 16) / 4).Take(16).ToArray()).ToArray();
        var (agree, first) = LmQuality.GreedyAgreement(float32, quantized, prompts, newTokens);
        return new(LmQuality.Perplexity(float32, tokens), LmQuality.Perplexity(quantized, tokens), agree, first, 4 * newTokens);
    }
}
