using Optimum.Core;
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
/// to within one sample. A dataset's k-th sample is window <c>perm(seed, d, k / T)[k % T]</c> of its T windows: each pass
/// over a dataset is a fresh seeded permutation of all its windows, so a down-weighted dataset samples all of its windows
/// rather than its first ones, and a small one is repeated in a new order each pass. The blend has as many samples as its
/// parts together (or <c>samples</c>); the trainer's <see cref="SampleIndex"/> shuffles them. Everything is drawn from the
/// seed up front, which keeps runs exact across resumes and rank counts. Validation interleaves the parts' held-out windows
/// by weight with the same greedy rule (a part drops out when its windows run out), so any prefix of it (the trainer
/// evaluates the first ones) is a weighted mix rather than the first dataset's. Owns the parts; dispose it.
/// </summary>
public sealed class BlendedLmData : IBatchSource, IDisposable
{
    private readonly IndexedLmData[] _parts;
    private readonly byte[] _part, _valPart;
    private readonly int[] _local, _valLocal;

    /// <param name="parts">The datasets and their weights (normalised by their sum).</param>
    /// <param name="samples">Samples of the blend; by default the parts' training windows together.</param>
    /// <param name="seed">The run's seed: it draws each part's window order, pass by pass.</param>
    public BlendedLmData(IReadOnlyList<(double Weight, IndexedLmData Data)> parts, long? samples = null, int seed = 0)
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
        var counts = Assign(Weights, n, null, _part);
        // Each part's k-th sample: window perm(seed, d, pass)[k % T] with pass = k / T, a fresh permutation each pass.
        var perms = new int[_parts.Length][];
        var taken = new long[_parts.Length];
        for (long i = 0; i < n; i++)
        {
            int d = _part[i];
            long t = _parts[d].TrainSamples, k = taken[d]++;
            if (t > int.MaxValue) throw new ArgumentException($"Dataset {_parts[d].Data.Prefix} has {t:N0} training windows; a blend takes parts of at most int.MaxValue.");
            if (k % t == 0) perms[d] = Permutation(perms[d], (int)t, Seeds.Derive(seed, 0xB1E4D, d, k / t));
            _local[i] = perms[d][k % t];
        }
        Counts = counts;
        SeqLen = seqLen;
        TrainSamples = n;
        long v = _parts.Sum(p => p.ValidationSamples);
        if (v > int.MaxValue) throw new ArgumentException($"The blend's parts hold {v:N0} validation windows; at most int.MaxValue.");
        ValidationSamples = v;
        _valPart = new byte[v];
        _valLocal = new int[v];
        var valCounts = Assign(Weights, v, _parts.Select(p => p.ValidationSamples).ToArray(), _valPart);
        Array.Clear(valCounts);
        for (long i = 0; i < v; i++) _valLocal[i] = (int)valCounts[_valPart[i]]++;
    }

    /// <summary>
    /// Megatron's greedy assignment: sample i goes to the part whose count lags <c>weight x (i + 1)</c> most (ties to the
    /// first), among the parts below their <paramref name="limits"/> when given. Returns the samples each part got.
    /// </summary>
    private static long[] Assign(IReadOnlyList<double> weights, long n, long[]? limits, byte[] part)
    {
        var counts = new long[weights.Count];
        for (long i = 0; i < n; i++)
        {
            int best = -1;
            double bestErr = double.NegativeInfinity;
            for (int d = 0; d < weights.Count; d++)
            {
                if (limits is not null && counts[d] >= limits[d]) continue;
                double err = weights[d] * (i + 1) - counts[d];
                if (err > bestErr) (best, bestErr) = (d, err);
            }
            part[i] = (byte)best;
            counts[best]++;
        }
        return counts;
    }

    private static int[] Permutation(int[]? buffer, int n, int seed)
    {
        var p = buffer ?? new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        new Random(seed).Shuffle(p);
        return p;
    }

    public int SeqLen { get; }
    /// <summary>Normalised weights, in the parts' order.</summary>
    public IReadOnlyList<double> Weights { get; }
    /// <summary>Samples of the blend that each part supplies.</summary>
    public IReadOnlyList<long> Counts { get; }
    public IReadOnlyList<IndexedLmData> Parts => _parts;
    public long TrainSamples { get; }
    public long ValidationSamples { get; }

    /// <summary>Which part, and which of its training windows, blend sample <paramref name="sample"/> is.</summary>
    public (int Part, long Window) Locate(long sample) => (_part[CheckTrain(sample)], _local[sample]);

    /// <summary>Which part, and which of its validation windows, validation sample <paramref name="sample"/> is.</summary>
    public (int Part, long Window) LocateValidation(long sample) =>
        (ulong)sample < (ulong)ValidationSamples ? (_valPart[sample], _valLocal[sample])
        : throw new ArgumentOutOfRangeException(nameof(sample), sample, $"The blend has {ValidationSamples:N0} validation samples.");

    private long CheckTrain(long sample) =>
        (ulong)sample < (ulong)TrainSamples ? sample : throw new ArgumentOutOfRangeException(nameof(sample), sample, $"The blend has {TrainSamples:N0} training samples.");

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        foreach (var s in samples) CheckTrain(s);
        var ids = LmData.Prepare(batch, samples.Length, SeqLen);
        for (int b = 0; b < samples.Length; b++)
            _parts[_part[samples[b]]].ReadTrain(_local[samples[b]], ids.AsSpan(b * SeqLen, SeqLen));
    }

    public void FillValidation(long first, int count, Batch batch)
    {
        if (first < 0 || count < 0 || first + count > ValidationSamples)
            throw new ArgumentOutOfRangeException(nameof(first), $"Validation samples [{first}, {first + count}) exceed the blend's {ValidationSamples:N0}.");
        var ids = LmData.Prepare(batch, count, SeqLen);
        for (int b = 0; b < count; b++)
            _parts[_valPart[first + b]].ReadValidation(_valLocal[first + b], ids.AsSpan(b * SeqLen, SeqLen));
    }

    public void Dispose()
    {
        foreach (var p in _parts) p.Dispose();
    }
}
