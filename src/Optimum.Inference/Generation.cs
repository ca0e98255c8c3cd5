namespace Optimum.Inference;

/// <summary>How to generate (HF generate()'s names where they exist).</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>0 = greedy; otherwise sample from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }
    /// <summary>Keep only the k most likely tokens when sampling (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p when sampling (1 = all).</summary>
    public double TopP { get; init; } = 1;
    /// <summary>HF's repetition penalty: logits of tokens already in the sequence are divided (if positive) or multiplied by it.</summary>
    public double RepetitionPenalty { get; init; } = 1;
    /// <summary>Seed of sampling; row r of a batch uses seed + r.</summary>
    public int Seed { get; init; }
    /// <summary>Stop a sequence when it produces this token (not returned); null = the model's eos_token_id.</summary>
    public int? EosTokenId { get; init; }
    /// <summary>Beam search with this many beams (1 = none).</summary>
    public int NumBeams { get; init; } = 1;
    /// <summary>Beam scores are sum(log p) / length^LengthPenalty.</summary>
    public double LengthPenalty { get; init; } = 1;
    /// <summary>Beam search stops as soon as NumBeams hypotheses are finished.</summary>
    public bool EarlyStopping { get; init; }

    /// <summary>
    /// Refuses values out of range with an <see cref="ArgumentException"/> naming the option: by its HF name
    /// (max_new_tokens), or as <paramref name="name"/> spells an HF name for the caller (a flag: --max-new-tokens).
    /// </summary>
    public void Validate(Func<string, string>? name = null)
    {
        void Check(bool ok, string key, object value, string rule)
        {
            if (!ok) throw new ArgumentException($"Invalid generation option: {name?.Invoke(key) ?? key} {value} must be {rule}.");
        }
        Check(MaxNewTokens >= 1, "max_new_tokens", MaxNewTokens, ">= 1");
        Check(Temperature is >= 0 and <= 100 && double.IsFinite(Temperature), "temperature", Temperature, "in [0, 100]");
        Check(TopK >= 0, "top_k", TopK, ">= 0");
        Check(TopP is > 0 and <= 1, "top_p", TopP, "in (0, 1]");
        Check(RepetitionPenalty is > 0 and <= 100, "repetition_penalty", RepetitionPenalty, "in (0, 100]");
        Check(NumBeams is >= 1 and <= 64, "num_beams", NumBeams, "in [1, 64]");
        Check(double.IsFinite(LengthPenalty), "length_penalty", LengthPenalty, "finite");
    }
}

/// <summary>
/// Why a generation ended. Wire names (<see cref="Optimum.Core.EnumNames"/>): "length", "eos", "stop", "cancelled".
/// A <see cref="Completion"/> reports OpenAI's reasons: <see cref="Stop"/> for an end-of-sequence token or a stop string.
/// </summary>
public enum FinishReason
{
    /// <summary>max_new_tokens reached.</summary>
    Length,
    /// <summary>The end-of-sequence token was generated.</summary>
    Eos,
    /// <summary>The caller stopped it (a stop string in a completion).</summary>
    Stop,
    /// <summary>Cancelled (client gone, timeout, shutdown).</summary>
    Cancelled,
}

/// <summary>The new tokens of one sequence and why generation stopped.</summary>
public sealed record GenerationResult(IReadOnlyList<int> Tokens, FinishReason FinishReason);

/// <summary>Decoding strategies over a <see cref="CausalLm"/>: greedy, sampling, beam search.</summary>
public static class Generator
{
    /// <summary>
    /// Greedy or sampled continuation of a batch of prompts of different lengths (left-padded, with an
    /// attention mask and per-row positions). <paramref name="onToken"/>(row, tokens so far) may return
    /// false to stop that row (stop strings). Cancelling <paramref name="cancel"/> stops all rows.
    /// </summary>
    public static IReadOnlyList<GenerationResult> Generate(IGenerativeModel lm, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions o,
        Func<int, IReadOnlyList<int>, bool>? onToken = null, CancellationToken cancel = default)
    {
        o.Validate();
        if (o.NumBeams > 1)
        {
            if (prompts.Count != 1) return prompts.Select(p => Generate(lm, [p], o, onToken, cancel)[0]).ToArray();
            return [BeamSearch(lm, prompts[0], o, cancel)];
        }
        int batch = prompts.Count;
        if (batch == 0) throw new ArgumentException("No prompts.", nameof(prompts));
        if (prompts.Any(p => p.Count == 0)) throw new ArgumentException("Every prompt needs at least one token.", nameof(prompts));
        int longest = prompts.Max(p => p.Count);
        if (longest + o.MaxNewTokens > lm.MaxPositions)
            throw new ArgumentException($"Prompt of {longest} tokens plus {o.MaxNewTokens} new tokens exceeds the model's {lm.MaxPositions} positions.");
        int? eos = o.EosTokenId ?? lm.EosTokenId;
        var ids = new long[batch * longest];
        var pos = new long[batch * longest];
        var mask = new List<long>(batch * (longest + o.MaxNewTokens));
        var rows = new List<long>[batch];
        for (int b = 0; b < batch; b++)
        {
            int pad = longest - prompts[b].Count;
            for (int t = 0; t < longest; t++)
            {
                ids[b * longest + t] = t < pad ? 0 : prompts[b][t - pad];
                pos[b * longest + t] = Math.Max(0, t - pad);
            }
            rows[b] = Enumerable.Repeat(0L, pad).Concat(Enumerable.Repeat(1L, prompts[b].Count)).ToList();
        }
        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[batch];
        var rngs = Enumerable.Range(0, batch).Select(b => new Random(o.Seed + b)).ToArray();
        var next = new long[batch];
        var nextPos = new long[batch];
        using var state = lm.Start();
        var logits = state.Step(ids, pos, [.. rows.SelectMany(r => r)], batch);             // valid until the next step
        for (int step = 0; ; step++)
        {
            for (int b = 0; b < batch; b++)
            {
                if (finish[b] is not null) { next[b] = eos ?? 0; continue; }
                var row = logits.Slice(b * lm.VocabSize, lm.VocabSize);
                int token = Sampling.Pick(row, o, rngs[b], prompts[b].Concat(generated[b]));
                if (token == eos) { finish[b] = FinishReason.Eos; next[b] = token; continue; }
                generated[b].Add(token);
                next[b] = token;
                if (onToken is not null && !onToken(b, generated[b])) finish[b] = FinishReason.Stop;
                else if (generated[b].Count >= o.MaxNewTokens) finish[b] = FinishReason.Length;
            }
            if (cancel.IsCancellationRequested)
                for (int b = 0; b < batch; b++) finish[b] ??= FinishReason.Cancelled;
            if (finish.All(f => f is not null)) break;
            for (int b = 0; b < batch; b++)
            {
                rows[b].Add(finish[b] is null ? 1 : 0);
                nextPos[b] = prompts[b].Count + generated[b].Count - 1;
            }
            logits = state.Step(next, nextPos, [.. rows.SelectMany(r => r)], batch);
        }
        return generated.Select((g, b) => new GenerationResult(g, finish[b]!.Value)).ToArray();
    }

    /// <summary>
    /// Beam search as HF's BeamSearchScorer does it: each step keeps the 2·NumBeams best (beam, token)
    /// extensions by summed log-probability; an extension ending in EOS among the best NumBeams
    /// becomes a finished hypothesis scored sum / generated_length^LengthPenalty; with early stopping
    /// the search ends when NumBeams hypotheses are finished, otherwise when no live beam can beat
    /// the worst of them. Returns the best hypothesis.
    /// </summary>
    public static GenerationResult BeamSearch(IGenerativeModel lm, IReadOnlyList<int> prompt, GenerationOptions o, CancellationToken cancel = default)
    {
        o.Validate();
        int k = o.NumBeams, V = lm.VocabSize, n = prompt.Count;
        if (n == 0) throw new ArgumentException("The prompt needs at least one token.", nameof(prompt));
        if (n + o.MaxNewTokens > lm.MaxPositions)
            throw new ArgumentException($"Prompt of {n} tokens plus {o.MaxNewTokens} new tokens exceeds the model's {lm.MaxPositions} positions.");
        int? eos = o.EosTokenId ?? lm.EosTokenId;
        var beams = Enumerable.Range(0, k).Select(_ => new List<int>()).ToArray();
        var scores = Enumerable.Range(0, k).Select(i => i == 0 ? 0.0 : -1e9).ToArray();   // only beam 0 is live at first
        var finished = new List<(double Score, List<int> Tokens)>();
        using var state = lm.Start();
        var ids = Enumerable.Range(0, k).SelectMany(_ => prompt.Select(t => (long)t)).ToArray();
        var pos = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, n).Select(i => (long)i)).ToArray();
        var logits = state.Step(ids, pos, Enumerable.Repeat(1L, k * n).ToArray(), k).ToArray();
        // As HF: an empty hypothesis scores sum / 0^penalty (-inf for a positive penalty).
        double Normalised(double sum, int length) => sum / Math.Pow(length, o.LengthPenalty);
        bool Done(int generatedBefore)
        {
            if (finished.Count < k) return false;
            if (o.EarlyStopping) return true;
            double worst = finished.Min(f => f.Score);
            return worst >= Normalised(scores.Max(), generatedBefore);
        }
        bool done = false;
        for (int step = 0; step < o.MaxNewTokens && !cancel.IsCancellationRequested; step++)
        {
            var candidates = new List<(double Score, int Beam, int Token)>(k * V);
            for (int b = 0; b < k; b++)
            {
                // As HF: log-softmax first, then the logits processors (repetition penalty) on the log-probabilities.
                var row = logits.AsSpan(b * V, V).ToArray();
                double max = row.Max(), sum = 0;
                foreach (var v in row) sum += Math.Exp(v - max);
                float logZ = (float)(max + Math.Log(sum));
                for (int t = 0; t < V; t++) row[t] -= logZ;
                Sampling.Penalise(row, o.RepetitionPenalty, prompt.Concat(beams[b]));
                for (int t = 0; t < V; t++) candidates.Add((scores[b] + row[t], b, t));
            }
            var best = candidates.OrderByDescending(c => c.Score).ThenBy(c => c.Beam).ThenBy(c => c.Token).Take(2 * k).ToArray();
            var nextBeams = new List<(double Score, int Beam, int Token)>();
            for (int i = 0; i < best.Length && nextBeams.Count < k; i++)
            {
                var c = best[i];
                if (c.Token == eos)
                {
                    if (i >= k) continue;
                    finished.Add((Normalised(c.Score, beams[c.Beam].Count), [.. beams[c.Beam]]));
                    if (finished.Count > k) finished.Remove(finished.MinBy(f => f.Score));
                }
                else nextBeams.Add(c);
            }
            var order = nextBeams.Select(c => c.Beam).ToArray();
            beams = nextBeams.Select(c => new List<int>(beams[c.Beam]) { c.Token }).ToArray();
            scores = nextBeams.Select(c => c.Score).ToArray();
            done = Done(beams[0].Count - 1);
            if (done || step + 1 == o.MaxNewTokens) break;
            state.Reorder(order);
            logits = state.Step(nextBeams.Select(c => (long)c.Token).ToArray(), Enumerable.Repeat((long)(n + beams[0].Count - 1), k).ToArray(),
                Enumerable.Repeat(1L, k * (state.Length + 1)).ToArray(), k).ToArray();
        }
        for (int b = 0; b < k && !done; b++) finished.Add((Normalised(scores[b], beams[b].Count), beams[b]));
        var winner = finished.OrderByDescending(f => f.Score).First();
        return new GenerationResult(winner.Tokens, winner.Tokens.Count >= o.MaxNewTokens ? FinishReason.Length : FinishReason.Eos);
    }
}

/// <summary>Logit processing and token choice (HF's order: repetition penalty, temperature, top-k, top-p).</summary>
public static class Sampling
{
    /// <summary>HF's RepetitionPenaltyLogitsProcessor, in place.</summary>
    public static void Penalise(Span<float> logits, double penalty, IEnumerable<int> seen)
    {
        if (penalty == 1) return;
        foreach (var t in seen.Distinct())
            if ((uint)t < (uint)logits.Length)
                logits[t] = logits[t] > 0 ? (float)(logits[t] / penalty) : (float)(logits[t] * penalty);
    }

    /// <summary>The next token: argmax when Temperature is 0, otherwise a seeded draw after top-k and top-p.</summary>
    public static int Pick(ReadOnlySpan<float> logits, GenerationOptions o, Random rng, IEnumerable<int>? seen = null)
    {
        if (o.Temperature <= 0 && (seen is null || o.RepetitionPenalty == 1)) return ArgMax(logits);     // greedy: no copy
        var row = logits.ToArray();
        if (seen is not null) Penalise(row, o.RepetitionPenalty, seen);
        if (o.Temperature <= 0) return ArgMax(row);
        var order = Enumerable.Range(0, row.Length).ToArray();
        Array.Sort(row.Select(v => -v).ToArray(), order);           // stable enough: ties keep index order
        int keep = o.TopK > 0 ? Math.Min(o.TopK, order.Length) : order.Length;
        double max = row[order[0]] / o.Temperature, total = 0;
        var probs = new double[keep];
        for (int i = 0; i < keep; i++) total += probs[i] = Math.Exp(row[order[i]] / o.Temperature - max);
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

    /// <summary>
    /// The index of the largest value, the first one on ties (as a scalar <c>&gt;</c> scan), vectorised: the maximum first, then
    /// the first block that holds it. Logits reach here finite (<see cref="KvCacheState"/> refuses NaN), and -0 equals 0 in both passes.
    /// </summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) throw new ArgumentException("ArgMax of no values.", nameof(values));
        int w = System.Numerics.Vector<float>.Count, n = values.Length, i = 0;
        float max = values[0];
        if (n >= 2 * w)
        {
            var m = new System.Numerics.Vector<float>(values);
            for (i = w; i + w <= n; i += w) m = System.Numerics.Vector.Max(m, new System.Numerics.Vector<float>(values[i..]));
            for (int k = 0; k < w; k++) max = Math.Max(max, m[k]);
        }
        for (; i < n; i++) max = Math.Max(max, values[i]);
        var target = new System.Numerics.Vector<float>(max);
        int j = 0;
        for (; j + w <= n; j += w)
            if (System.Numerics.Vector.EqualsAny(new System.Numerics.Vector<float>(values[j..]), target)) break;
        for (; j < n; j++) if (values[j] == max) return j;
        throw new ArgumentException("ArgMax: no value equals the maximum (NaN in the input?).", nameof(values));
    }
}
