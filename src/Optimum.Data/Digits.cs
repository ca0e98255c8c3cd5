using System.Globalization;
using System.IO.Compression;

namespace Optimum.Data;

/// <summary>The 8x8 handwritten digits (samples/data/digits.csv.gz): 64 pixels 0..16 then the label, per row.</summary>
public sealed record Digits(float[] Pixels, long[] Labels)
{
    public int Count => Labels.Length;
    public const int Features = 64;

    /// <summary>Reads the CSV, gzip-compressed or plain; a malformed row or a damaged archive is refused naming the file (and line and field).</summary>
    public static Digits Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Digits data '{path}' does not exist (expected samples/data/digits.csv.gz).", path);
        try { return Read(path); }
        catch (InvalidDataException e) when (!e.Message.StartsWith(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"{path}: not a readable digits CSV (damaged gzip data?): {e.Message}", e);
        }
    }

    private static Digits Read(string path)
    {
        using var file = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[2];
        bool gzip = file.ReadAtLeast(magic, 2, throwOnEndOfStream: false) == 2 && magic[0] == 0x1F && magic[1] == 0x8B;
        file.Position = 0;
        using Stream text = gzip ? new GZipStream(file, CompressionMode.Decompress) : file;
        using var reader = new StreamReader(text);
        var pixels = new List<float>();
        var labels = new List<long>();
        string? line;
        int lineNo = 0;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNo++;
            if (line.Length == 0) continue;
            var f = line.Split(',');
            if (f.Length != Features + 1) throw new InvalidDataException($"{path}:{lineNo}: expected {Features + 1} fields, got {f.Length}.");
            for (int i = 0; i <= Features; i++)
            {
                if (!int.TryParse(f[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < 0 || v > (i < Features ? 16 : 9))
                    throw new InvalidDataException($"{path}:{lineNo}: field {i + 1} is '{f[i]}', expected an integer in 0..{(i < Features ? 16 : 9)}.");
                if (i < Features) pixels.Add(v / 16f); else labels.Add(v);
            }
        }
        if (labels.Count == 0) throw new InvalidDataException($"{path}: no rows.");
        return new Digits([.. pixels], [.. labels]);
    }

    /// <summary>Rows <paramref name="rows"/> as a new set.</summary>
    public Digits Take(IReadOnlyList<int> rows)
    {
        var px = new float[rows.Count * Features];
        var lb = new long[rows.Count];
        for (int i = 0; i < rows.Count; i++)
        {
            Array.Copy(Pixels, rows[i] * Features, px, i * Features, Features);
            lb[i] = Labels[rows[i]];
        }
        return new Digits(px, lb);
    }

    /// <summary>A seeded shuffle split into (train, validation).</summary>
    public (Digits Train, Digits Validation) Split(double validationFraction, int seed)
    {
        var order = Enumerable.Range(0, Count).ToArray();
        new Random(seed).Shuffle(order);
        int nVal = (int)Math.Round(Count * validationFraction);
        return (Take(order[nVal..]), Take(order[..nVal]));
    }
}

/// <summary>
/// Digits as training batches for the MLP's graphs: "pixels" (batch, 64) in [0, 1] and "labels" (batch); a seeded
/// shuffle holds <c>validationFraction</c> of the rows out for validation.
/// </summary>
public sealed class DigitsData : IBatchSource
{
    private readonly Digits _train, _val;

    public DigitsData(Digits all, double validationFraction, int seed = 0)
    {
        if (validationFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "Must be in (0, 1).");
        (_train, _val) = all.Split(validationFraction, seed);
    }

    public long TrainSamples => _train.Count;
    public long ValidationSamples => _val.Count;
    /// <summary>The held-out rows (e.g. for accuracy).</summary>
    public Digits Validation => _val;

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch) => Fill(_train, samples.ToArray(), batch);

    public void FillValidation(long first, int count, Batch batch) => Fill(_val, Enumerable.Range((int)first, count).ToArray(), batch);

    private static void Fill(Digits from, int[] rows, Batch batch)
    {
        // The arrays are reused while the batch size stays, so the trainer binds them once.
        int n = rows.Length;
        if (!batch.TryGetValue("labels", out var l) || l.Shape[0] != n)
        {
            batch["pixels"] = new BatchTensor(new float[n * Digits.Features], [n, Digits.Features]);
            batch["labels"] = new BatchTensor(new long[n], [n]);
        }
        var pixels = (float[])batch["pixels"].Data;
        var labels = (long[])batch["labels"].Data;
        for (int i = 0; i < n; i++)
        {
            Array.Copy(from.Pixels, rows[i] * Digits.Features, pixels, i * Digits.Features, Digits.Features);
            labels[i] = from.Labels[rows[i]];
        }
        batch.Tokens = n;
    }
}
