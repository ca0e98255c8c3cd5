using Optimum.Core;
namespace Optimum.Data;

/// <summary>Where a trainer gets its batches: a fixed set of training samples and validation batches.</summary>
public interface IBatchSource
{
    /// <summary>Number of distinct training samples (e.g. windows of tokens).</summary>
    long TrainSamples { get; }
    /// <summary>Number of validation samples.</summary>
    long ValidationSamples { get; }
    /// <summary>Fills <paramref name="batch"/> (reused across calls) with the training samples <paramref name="samples"/>.</summary>
    void FillTrain(ReadOnlySpan<int> samples, Batch batch);
    /// <summary>
    /// As <see cref="FillTrain(ReadOnlySpan{int}, Batch)"/>, told where the batch starts in the run's sample stream
    /// (<paramref name="position"/>: the same after a resume and on any number of ranks): sources that draw random
    /// augmentations or noise per sample seed them from it.
    /// </summary>
    void FillTrain(ReadOnlySpan<int> samples, long position, Batch batch) => FillTrain(samples, batch);
    /// <summary>Fills <paramref name="batch"/> with validation samples [first, first + count).</summary>
    void FillValidation(long first, int count, Batch batch);
}

/// <summary>
/// A causal-LM corpus cut into non-overlapping windows of <c>seqLen</c> tokens (as HF's run_clm
/// groups texts); the last <c>validationFraction</c> of the stream is held out for validation.
/// input_ids and labels are the same window (the model shifts labels), attention_mask is all ones.
/// </summary>
public sealed class LmData : IBatchSource
{
    private readonly int[] _tokens;
    private readonly long _split;

    public LmData(int[] tokens, int seqLen, double validationFraction = 0.05)
    {
        if (seqLen < 2) throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, "Sequence length must be at least 2.");
        if (validationFraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "Must be in [0, 1).");
        _tokens = tokens;
        SeqLen = seqLen;
        _split = (long)(tokens.Length * (1 - validationFraction));
        TrainSamples = _split / seqLen;
        ValidationSamples = (tokens.Length - _split) / seqLen;
        if (TrainSamples < 1)
            throw new InvalidDataException($"The corpus has {tokens.Length:N0} tokens: not one training window of {seqLen} tokens.");
    }

    public int SeqLen { get; }
    public long TrainSamples { get; }
    public long ValidationSamples { get; }

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        var ids = Prepare(batch, samples.Length);
        for (int b = 0; b < samples.Length; b++)
            Array.Copy(_tokens, (long)samples[b] * SeqLen, ids, (long)b * SeqLen, SeqLen);
    }

    public void FillValidation(long first, int count, Batch batch)
    {
        if (first < 0 || first + count > ValidationSamples) throw new ArgumentOutOfRangeException(nameof(first), $"Validation samples [{first}, {first + count}) exceed {ValidationSamples}.");
        var ids = Prepare(batch, count);
        for (int b = 0; b < count; b++)
            Array.Copy(_tokens, _split + (first + b) * SeqLen, ids, (long)b * SeqLen, SeqLen);
    }

    /// <summary>Reuses the batch's arrays when the shape is unchanged, so the session keeps its bindings.</summary>
    private long[] Prepare(Batch batch, int rows) => Prepare(batch, rows, SeqLen);

    /// <summary>input_ids, labels (the same array) and attention_mask of <paramref name="rows"/> windows; returns input_ids to fill.</summary>
    internal static long[] Prepare(Batch batch, int rows, int seqLen)
    {
        long[] shape = [rows, seqLen];
        batch.LossWeight = (double)rows * (seqLen - 1);        // the shifted loss counts seq-1 labels per row
        if (batch.TryGetValue("input_ids", out var t) && t.Shape.AsSpan().SequenceEqual(shape))
        {
            batch.Tokens = (long)rows * seqLen;
            return (long[])t.Data;
        }
        var ids = new long[rows * seqLen];
        batch["input_ids"] = new BatchTensor(ids, shape);
        batch["labels"] = new BatchTensor(ids, shape);        // the graph shifts labels itself
        batch["attention_mask"] = new BatchTensor(Enumerable.Repeat(1L, ids.Length).ToArray(), shape);
        batch.Tokens = ids.Length;
        return ids;
    }
}

/// <summary>
/// The order of training samples for a whole run, built up front from the seed (as Megatron-LM
/// builds its shuffle index): epoch e is a seeded permutation of all samples, epochs concatenated
/// until every step has its samples. Sample k of the run is the same in any process and after any
/// resume, which is what makes runs reproducible and resumable at any step.
/// </summary>
public sealed class SampleIndex
{
    private readonly int[] _order;

    public SampleIndex(long samples, long needed, int seed)
    {
        if (samples < 1 || samples > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(samples), samples, "Sample count out of range.");
        if (needed < 0 || needed > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(needed), needed, "Too many samples for one run.");
        _order = new int[needed];
        var perm = new int[samples];
        for (long at = 0, epoch = 0; at < needed; epoch++)
        {
            for (int i = 0; i < samples; i++) perm[i] = i;
            new Random(Seeds.Derive(seed, epoch, 0x5A3D)).Shuffle(perm);
            int take = (int)Math.Min(samples, needed - at);
            Array.Copy(perm, 0, _order, at, take);
            at += take;
        }
        Samples = samples;
    }

    public long Samples { get; }
    public long Count => _order.Length;
    public ReadOnlySpan<int> Slice(long start, int count) => _order.AsSpan(checked((int)start), count);
}
