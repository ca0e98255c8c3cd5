namespace Optimum.Models;

/// <summary>GPT-2 (model_type gpt2): a causal LM trained on text files with GPT-2's BPE, served with a KV-cache decoder.</summary>
public sealed class Gpt2Kind : ModelKind<Gpt2Config>
{
    /// <summary>The bundled small config: 4 layers, 4 heads, width 128, 256 positions, GPT-2's BPE vocabulary.</summary>
    public static Gpt2Config Mini { get; } = new()
    {
        VocabSize = 50257, NPositions = 256, NEmbd = 128, NLayer = 4, NHead = 4,
        EmbdPdrop = 0.1, AttnPdrop = 0.1, ResidPdrop = 0.1,
    };

    public override IReadOnlyList<string> ModelTypes { get; } = ["gpt2"];
    public override bool CutsWindows => true;
    public override string TrainingData => "text files or folders (*.txt; each file one document), or a dataset made by preprocess (<prefix> of .bin/.idx)";


    /// <summary>Writes config.json, training.onnx, eval.onnx and inference.onnx (the KV-cache decoder).</summary>
    public override void Write(string dir, Gpt2Config c)
    {
        var decoder = new GraphBuilder("gpt2_decoder");
        Gpt2.DefineDecoder(decoder, c);
        Artifacts.Write(dir, "gpt2", c.ToHf(), Define(c), [(ModelFolder.InferenceFile, "inference", decoder)]);
    }

    public override Func<GraphBuilder, bool, ModelOutputs> Define(Gpt2Config c) => (g, training) => Gpt2.DefineLm(g, training, c);

    /// <summary>
    /// HF's GPT2PreTrainedModel._init_weights: weights and embeddings ~ N(0, initializer_range), the residual
    /// projections (<c>c_proj.weight</c>) ~ N(0, initializer_range / sqrt(2 n_layer)), biases 0, LayerNorm weights 1.
    /// </summary>
    public override float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, Gpt2Config c, int seed)
    {
        var rng = new Random(seed);
        return parameters.Select(p =>
        {
            if (p.Name.EndsWith(".bias", StringComparison.Ordinal)) return new float[p.Count];
            if (p.Name.Contains(".ln_", StringComparison.Ordinal)) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            var std = p.Name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? c.InitializerRange / Math.Sqrt(2.0 * c.NLayer) : c.InitializerRange;
            return HfWeights.Normal(rng, p.Count, std);
        }).ToArray();
    }

    /// <summary>
    /// Text tokenized with GPT-2's BPE (cached), or datasets tokenized ahead (<see cref="IndexedDataset"/>, memory-mapped; a prefix
    /// in <see cref="DataOptions.Files"/> or a <see cref="DataOptions.Blend"/>), cut into windows of <see cref="DataOptions.SeqLen"/> tokens.
    /// </summary>
    public override IBatchSource OpenTrainingData(DataOptions o, Gpt2Config c, Action<string> say)
    {
        int seqLen = o.SeqLen ?? Math.Min(DataOptions.DefaultSeqLen, c.NPositions);
        if (seqLen > c.NPositions) throw new ArgumentException($"--seq-len {seqLen} exceeds the model's n_positions {c.NPositions}.");
        if (seqLen < 2) throw new ArgumentException($"--seq-len {seqLen} must be at least 2 (the loss predicts each token from the ones before it).");
        if (c.VocabSize < Gpt2Tokenizer.EndOfText + 1) throw new ArgumentException($"The model's vocab_size {c.VocabSize} is smaller than GPT-2's BPE vocabulary ({Gpt2Tokenizer.EndOfText + 1}).");
        if (o.Blend is { Count: > 0 } || o.Files.Any(f => IndexedDataset.IsDataset(f, out _))) return OpenDatasets(o, seqLen, say);
        var corpus = TokenCorpus.Load(o.Files, o.CacheDir, say);
        var data = new LmData(corpus.Tokens, seqLen, o.ValidationFraction);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation windows of {seqLen} tokens");
        return data;
    }

    public override IDocumentTokenizer DocumentTokenizer(string modelDir) => new Gpt2DocumentTokenizer();

    private static IBatchSource OpenDatasets(DataOptions o, int seqLen, Action<string> say)
    {
        var tok = Gpt2DocumentTokenizer.Gpt2Identity;
        if (o.Blend is not { Count: > 0 })
        {
            if (o.Files.Count != 1 || !IndexedDataset.IsDataset(o.Files[0], out var prefix))
                throw new ArgumentException($"--data {string.Join(" ", o.Files)}: give one dataset prefix, text files, or several datasets with --data-blend (weight prefix ...), not a mix.");
            var one = IndexedLmData.Open(prefix, seqLen, o.ValidationFraction, tok);
            Describe(one, say);
            return one;
        }
        if (o.Files.Count > 0) throw new ArgumentException("Give --data or --data-blend, not both.");
        var parts = new List<(double, IndexedLmData)>();
        try
        {
            foreach (var p in o.Blend)
            {
                var d = IndexedLmData.Open(p.Prefix, seqLen, o.ValidationFraction, tok);
                parts.Add((p.Weight, d));
                Describe(d, say);
            }
            var blend = new BlendedLmData(parts, seed: o.Seed);
            say($"blend: {blend.TrainSamples:N0} samples: " + string.Join(", ", blend.Parts.Select((p, i) => $"{blend.Weights[i]:P1} {Path.GetFileName(p.Data.Prefix)} ({blend.Counts[i]:N0})")));
            return blend;
        }
        catch
        {
            foreach (var (_, d) in parts) d.Dispose();
            throw;
        }
    }

    private static void Describe(IndexedLmData d, Action<string> say) =>
        say($"data: {d.Data.Prefix} (memory-mapped, {d.Data.Tokens:N0} ids, {d.Data.Documents:N0} documents): {d.TrainSamples:N0} training windows of {d.SeqLen} tokens"
            + (d.ValidationSamples > 0 ? $", {d.ValidationSamples:N0} validation windows from the last {d.ValidationDocuments:N0} document(s)"
               : $" (no validation: {d.NoValidationReason})"));

    public override LoadedModel Load(string dir, SessionSettings? settings = null)
    {
        var lm = new CausalLm(dir, settings: settings);
        try { return new LoadedModel(dir, new TextGenerator(lm, Gpt2Tokenizer.Create()), lm); }
        catch
        {
            lm.Dispose();
            throw;
        }
    }

    /// <summary>The base folder's weights in one shared buffer, served as the base and as PEFT LoRA adapters over it, each behind GPT-2's BPE.</summary>
    public override Inference.Lora.AdapterSet OpenAdapters(string dir, SessionSettings? settings = null) => Inference.Lora.AdapterSet.OpenGpt2(dir, settings);
}
