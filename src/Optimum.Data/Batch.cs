namespace Optimum.Data;

/// <summary>One named tensor of a batch; the array is bound in place (reuse it across steps to avoid rebinding).</summary>
public sealed record BatchTensor(Array Data, long[] Shape);

/// <summary>The data inputs of one step by graph input name (e.g. input_ids, attention_mask, labels).</summary>
public sealed class Batch : Dictionary<string, BatchTensor>
{
    /// <summary>Tokens (or examples) the batch trains on, for throughput figures.</summary>
    public long Tokens { get; set; }
    /// <summary>
    /// How many terms the graph's mean loss averages (e.g. labels not -100, observed future steps); used to
    /// combine micro-batches and ranks exactly. 0 means the batch has nothing to learn from; null = <see cref="Tokens"/>.
    /// </summary>
    public double? LossWeight { get; set; }
}
