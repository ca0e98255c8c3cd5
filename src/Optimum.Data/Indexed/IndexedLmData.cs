namespace Optimum.Data;

/// <summary>
/// Causal-LM windows over a memory-mapped <see cref="IndexedDataset"/>: the most trailing documents whose ids stay within
/// <c>validationFraction</c> of the ids are held out for validation (none when the last document alone is more, or when
/// those documents do not make one window: then they stay in training),
/// the others form the training stream, documents separated by the end-of-document id, cut into non-overlapping windows of
/// <c>seqLen</c> ids. With every document in training the windows are those <see cref="LmData"/> cuts from the same text
/// tokenized in memory (<see cref="TokenCorpus"/>), so training reads the same batches from either. Windows are read from
/// the mapping when a batch is filled: resident memory does not grow with the corpus. Owns the dataset; dispose it.
/// </summary>
public sealed class IndexedLmData : IBatchSource, IDisposable
{
    private readonly long _valStart;

    public IndexedLmData(IndexedDataset data, int seqLen, double validationFraction = 0.05)
    {
        if (seqLen < 2) throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, "Sequence length must be at least 2.");
        if (validationFraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "Must be in [0, 1).");
        (Data, SeqLen) = (data, seqLen);
        long docs = data.Documents, first = docs;
        NoValidationReason = validationFraction == 0 ? "the validation fraction is 0"
            : docs < 2 ? "the split is by documents, and there is one" : null;
        if (validationFraction > 0 && docs >= 2)
        {
            // The most trailing documents whose ids stay within the fraction (none when the last alone exceeds it).
            double held = data.Tokens * validationFraction;
            long lo = 1, hi = docs;
            while (lo < hi)
            {
                long mid = (lo + hi) / 2;
                if (data.Tokens - data.DocumentOffset(mid) <= held) hi = mid;
                else lo = mid + 1;
            }
            first = lo;
            if (first == docs) NoValidationReason = "the split is by documents, and the last one alone holds more than the validation share";
            // Held-out documents too short for one validation window stay in training rather than being dropped.
            else if ((data.Tokens - 1 - data.DocumentOffset(first)) / seqLen < 1)
            {
                NoValidationReason = $"the last {docs - first:N0} document(s), within the validation share, hold fewer than {seqLen + 1} ids: not one window (they stay in training)";
                first = docs;
            }
        }
        TrainDocuments = first;
        // Training: documents [0, first) without the end-of-document id after the last one; validation: the rest likewise.
        long trainEnd = first < docs ? data.DocumentOffset(first) - 1 : data.Tokens - 1;
        _valStart = first < docs ? data.DocumentOffset(first) : data.Tokens;
        TrainSamples = trainEnd / seqLen;
        ValidationSamples = first < docs ? (data.Tokens - 1 - _valStart) / seqLen : 0;
        if (TrainSamples < 1)
            throw new InvalidDataException($"Dataset {data.Prefix}: its {TrainDocuments:N0} training document(s) hold {trainEnd:N0} ids: not one training window of {seqLen}.");
    }

    /// <summary>Opens <paramref name="prefix"/> checked against the model's tokenizer (<see cref="IndexedDataset.Open"/>).</summary>
    public static IndexedLmData Open(string prefix, int seqLen, double validationFraction, TokenizerIdentity? tokenizer, bool verifyBin = true)
    {
        var ds = IndexedDataset.Open(prefix, tokenizer, verifyBin);
        try { return new IndexedLmData(ds, seqLen, validationFraction); }
        catch
        {
            ds.Dispose();
            throw;
        }
    }

    public IndexedDataset Data { get; }
    public int SeqLen { get; }
    public long TrainDocuments { get; }
    public long ValidationDocuments => Data.Documents - TrainDocuments;
    public long TrainSamples { get; }
    public long ValidationSamples { get; }
    /// <summary>Why there are no validation windows (null when there are).</summary>
    public string? NoValidationReason { get; }

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        var ids = LmData.Prepare(batch, samples.Length, SeqLen);
        for (int b = 0; b < samples.Length; b++) ReadTrain(samples[b], ids.AsSpan(b * SeqLen, SeqLen));
    }

    public void FillValidation(long first, int count, Batch batch)
    {
        if (first < 0 || first + count > ValidationSamples) throw new ArgumentOutOfRangeException(nameof(first), $"Validation samples [{first}, {first + count}) exceed {ValidationSamples}.");
        var ids = LmData.Prepare(batch, count, SeqLen);
        for (int b = 0; b < count; b++) ReadValidation(first + b, ids.AsSpan(b * SeqLen, SeqLen));
    }

    internal void ReadTrain(long sample, Span<long> dst)
    {
        if ((ulong)sample >= (ulong)TrainSamples) throw new ArgumentOutOfRangeException(nameof(sample), sample, $"Dataset {Data.Prefix} has {TrainSamples:N0} training windows.");
        Data.Read(sample * SeqLen, dst);
    }

    internal void ReadValidation(long sample, Span<long> dst)
    {
        if ((ulong)sample >= (ulong)ValidationSamples) throw new ArgumentOutOfRangeException(nameof(sample), sample, $"Dataset {Data.Prefix} has {ValidationSamples:N0} validation windows.");
        Data.Read(_valStart + sample * SeqLen, dst);
    }

    public void Dispose() => Data.Dispose();
}
