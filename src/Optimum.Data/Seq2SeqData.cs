using System.Text.Json;

namespace Optimum.Data;

/// <summary>
/// Pairs of token sequences for an encoder-decoder: input_ids and attention_mask from the sources
/// (right-padded to the batch's longest), labels from the targets (padded with -100, which the loss
/// ignores). The last <c>validationFraction</c> of the pairs is held out.
/// </summary>
public sealed class Seq2SeqData : IBatchSource
{
    private readonly (int[] Source, int[] Target)[] _train, _val;
    private readonly int _pad;

    public Seq2SeqData(IReadOnlyList<(int[] Source, int[] Target)> pairs, double validationFraction = 0.05, int padTokenId = 0)
    {
        if (pairs.Count < 2) throw new InvalidDataException($"Need at least 2 pairs, got {pairs.Count}.");
        int nVal = (int)Math.Round(pairs.Count * validationFraction);
        _train = pairs.Take(pairs.Count - nVal).ToArray();
        _val = pairs.Skip(pairs.Count - nVal).ToArray();
        _pad = padTokenId;
    }

    public long TrainSamples => _train.Length;
    public long ValidationSamples => _val.Length;
    public IReadOnlyList<(int[] Source, int[] Target)> Validation => _val;

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        var rows = new (int[], int[])[samples.Length];
        for (int i = 0; i < samples.Length; i++) rows[i] = _train[samples[i]];
        Fill(rows, batch);
    }

    public void FillValidation(long first, int count, Batch batch) => Fill(_val.AsSpan((int)first, count).ToArray(), batch);

    private void Fill((int[] Source, int[] Target)[] rows, Batch batch)
    {
        int s = rows.Max(r => r.Source.Length), t = rows.Max(r => r.Target.Length), n = rows.Length;
        var ids = Reuse(batch, "input_ids", n, s);
        var mask = Reuse(batch, "attention_mask", n, s);
        var labels = Reuse(batch, "labels", n, t);
        for (int r = 0; r < n; r++)
        {
            for (int i = 0; i < s; i++)
            {
                bool real = i < rows[r].Source.Length;
                ids[r * s + i] = real ? rows[r].Source[i] : _pad;
                mask[r * s + i] = real ? 1 : 0;
            }
            for (int i = 0; i < t; i++) labels[r * t + i] = i < rows[r].Target.Length ? rows[r].Target[i] : -100;
        }
        batch.Tokens = rows.Sum(r => r.Source.Length + r.Target.Length);
        batch.LossWeight = rows.Sum(r => r.Target.Length);                 // labels that are not -100
    }

    private static long[] Reuse(Batch batch, string name, int rows, int cols)
    {
        long[] shape = [rows, cols];
        if (batch.TryGetValue(name, out var t) && t.Shape.AsSpan().SequenceEqual(shape)) return (long[])t.Data;
        var a = new long[rows * cols];
        batch[name] = new BatchTensor(a, shape);
        return a;
    }

    /// <summary>
    /// Reads (source, target) text pairs: a .jsonl file of {"source": ..., "target": ...} objects, or a
    /// tab-separated file with source and target columns. A malformed line is refused naming file and line.
    /// </summary>
    public static IReadOnlyList<(string Source, string Target)> ReadPairs(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Pairs file '{path}' does not exist.", path);
        var pairs = new List<(string, string)>();
        int line = 0;
        bool jsonl = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (text.Trim().Length == 0) continue;
            if (jsonl)
            {
                try
                {
                    using var doc = JsonDocument.Parse(text);
                    pairs.Add((doc.RootElement.GetProperty("source").GetString()!, doc.RootElement.GetProperty("target").GetString()!));
                }
                catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
                {
                    throw new InvalidDataException($"{path}:{line}: expected {{\"source\": \"...\", \"target\": \"...\"}} ({e.Message}).");
                }
            }
            else
            {
                var cols = text.Split('\t');
                if (cols.Length != 2) throw new InvalidDataException($"{path}:{line}: expected 2 tab-separated columns (source, target), got {cols.Length}.");
                pairs.Add((cols[0], cols[1]));
            }
        }
        if (pairs.Count == 0) throw new InvalidDataException($"{path}: no pairs.");
        return pairs;
    }
}
