using System.Globalization;

namespace Optimum.Data;

/// <summary>One dataset of a blend and its weight (weights are normalised by their sum).</summary>
public sealed record BlendPart(double Weight, string Prefix)
{
    /// <summary>Parses "0.7 a 0.3 b" (as <c>--data-blend</c> takes it): weights are positive finite numbers, each followed by a dataset prefix.</summary>
    public static IReadOnlyList<BlendPart> Parse(IReadOnlyList<string> args)
    {
        if (args.Count == 0 || args.Count % 2 != 0)
            throw new ArgumentException($"--data-blend takes weight-dataset pairs (e.g. 0.7 web 0.3 books); got {args.Count} value(s): {string.Join(" ", args)}.");
        var parts = new List<BlendPart>();
        for (int i = 0; i < args.Count; i += 2)
        {
            if (!double.TryParse(args[i], NumberStyles.Float, CultureInfo.InvariantCulture, out var w))
                throw new ArgumentException($"--data-blend: '{args[i]}' (value {i + 1}) is not a weight; pairs are a weight then a dataset prefix.");
            parts.Add(new BlendPart(w, args[i + 1]));
        }
        Check(parts);
        return parts;
    }

    internal static void Check(IReadOnlyList<BlendPart> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("A blend needs at least one dataset.");
        foreach (var p in parts)
            if (!(p.Weight > 0) || !double.IsFinite(p.Weight))
                throw new ArgumentException($"--data-blend: the weight {p.Weight.ToString(CultureInfo.InvariantCulture)} of '{p.Prefix}' must be a positive finite number.");
    }
}

/// <summary>
/// Several datasets' windows mixed by weight, as Megatron-LM's BlendedDataset: sample i of the blend goes to the dataset
/// whose share so far lags its weight most (ties to the first), so any prefix of the blend holds each dataset in proportion
/// to within one sample; a dataset's k-th sample is its window k modulo its windows (a small dataset is repeated). The
/// blend has as many samples as its parts together (or <c>samples</c>); the trainer's <see cref="SampleIndex"/> shuffles
/// them, which keeps runs exact across resumes and rank counts. Validation is every part's held-out windows, in order.
/// Owns the parts; dispose it.
/// </summary>
public sealed class BlendedLmData : IBatchSource, IDisposable
{
    private readonly IndexedLmData[] _parts;
    private readonly byte[] _part;
    private readonly int[] _local;

    public BlendedLmData(IReadOnlyList<(double Weight, IndexedLmData Data)> parts, long? samples = null)
    {
        BlendPart.Check(parts.Select(p => new BlendPart(p.Weight, p.Data.Data.Prefix)).ToArray());
        if (parts.Count > byte.MaxValue) throw new ArgumentException($"A blend takes at most {byte.MaxValue} datasets, not {parts.Count}.");
        int seqLen = parts[0].Data.SeqLen;
        if (parts.Any(p => p.Data.SeqLen != seqLen)) throw new ArgumentException("The blend's datasets must cut windows of one length.");
        _parts = parts.Select(p => p.Data).ToArray();
        double sum = parts.Sum(p => p.Weight);
        Weights = parts.Select(p => p.Weight / sum).ToArray();
        long n = samples ?? _parts.Sum(p => p.TrainSamples);
        if (n < 1 || n > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(samples), n, "A blend has between 1 and int.MaxValue samples.");
        _part = new byte[n];
        _local = new int[n];
        var counts = new long[_parts.Length];
        for (long i = 0; i < n; i++)
        {
            int best = 0;
            double bestErr = double.NegativeInfinity;
            for (int d = 0; d < _parts.Length; d++)
            {
                double err = Weights[d] * (i + 1) - counts[d];
                if (err > bestErr) (best, bestErr) = (d, err);
            }
            _part[i] = (byte)best;
            _local[i] = (int)(counts[best]++ % _parts[best].TrainSamples);
        }
        Counts = counts;
        SeqLen = seqLen;
        TrainSamples = n;
        ValidationSamples = _parts.Sum(p => p.ValidationSamples);
    }

    public int SeqLen { get; }
    /// <summary>Normalised weights, in the parts' order.</summary>
    public IReadOnlyList<double> Weights { get; }
    /// <summary>Samples of the blend that each part supplies.</summary>
    public IReadOnlyList<long> Counts { get; }
    public IReadOnlyList<IndexedLmData> Parts => _parts;
    public long TrainSamples { get; }
    public long ValidationSamples { get; }

    /// <summary>Which part, and which of its windows, blend sample <paramref name="sample"/> is.</summary>
    public (int Part, long Window) Locate(long sample) => (_part[sample], _local[sample]);

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        var ids = LmData.Prepare(batch, samples.Length, SeqLen);
        for (int b = 0; b < samples.Length; b++)
            _parts[_part[samples[b]]].ReadTrain(_local[samples[b]], ids.AsSpan(b * SeqLen, SeqLen));
    }

    public void FillValidation(long first, int count, Batch batch)
    {
        if (first < 0 || first + count > ValidationSamples) throw new ArgumentOutOfRangeException(nameof(first), $"Validation samples [{first}, {first + count}) exceed {ValidationSamples}.");
        var ids = LmData.Prepare(batch, count, SeqLen);
        for (int b = 0; b < count; b++)
        {
            long s = first + b;
            int d = 0;
            while (s >= _parts[d].ValidationSamples) s -= _parts[d++].ValidationSamples;
            _parts[d].ReadValidation(s, ids.AsSpan(b * SeqLen, SeqLen));
        }
    }

    public void Dispose()
    {
        foreach (var p in _parts) p.Dispose();
    }
}
