namespace Optimum.Data;

/// <summary>
/// What a model kind needs to open its training data (see <c>IModelKind.OpenTrainingData</c>).
/// </summary>
/// <param name="ModelDir">The model folder (its tokenizer files, e.g. vocab.json or spiece.model, live there).</param>
/// <param name="Files">Text files or folders (causal LMs), pair files (seq2seq) or series files (time series).</param>
/// <param name="SeqLen">Tokens per causal-LM window (null: <see cref="DefaultSeqLen"/>); kinds that do not cut windows refuse a value.</param>
/// <param name="ValidationFraction">Share of the text or pairs held out for validation.</param>
/// <param name="CacheDir">Where token caches go (null = the default cache folder).</param>
/// <param name="Holdout">Time series: points at the end of each series kept out of training windows (null = prediction_length).</param>
/// <param name="Seed">The run's seed, for sources that draw per-sample randomness (diffusion noise and timesteps).</param>
/// <param name="LabelDropout">Class-conditional diffusion: share of labels replaced by the null label (classifier-free guidance).</param>
/// <param name="Blend">Causal LMs: datasets tokenized ahead (<see cref="IndexedDataset"/>) mixed by weight, instead of <paramref name="Files"/>.</param>
public sealed record DataOptions(string ModelDir, IReadOnlyList<string> Files, int? SeqLen = null, double ValidationFraction = 0.05,
    string? CacheDir = null, int? Holdout = null, int Seed = 0, double LabelDropout = 0.1, IReadOnlyList<BlendPart>? Blend = null)
{
    /// <summary>The causal-LM window when none is given.</summary>
    public const int DefaultSeqLen = 128;
}
