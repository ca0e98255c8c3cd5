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
    public override string TrainingData => "text files or folders (*.txt; each file one document)";


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

    /// <summary>Text tokenized with GPT-2's BPE (cached), cut into windows of <see cref="DataOptions.SeqLen"/> tokens.</summary>
    public override IBatchSource OpenTrainingData(DataOptions o, Gpt2Config c, Action<string> say)
    {
        int seqLen = o.SeqLen ?? Math.Min(DataOptions.DefaultSeqLen, c.NPositions);
        if (seqLen > c.NPositions) throw new ArgumentException($"--seq-len {seqLen} exceeds the model's n_positions {c.NPositions}.");
        if (seqLen < 2) throw new ArgumentException($"--seq-len {seqLen} must be at least 2 (the loss predicts each token from the ones before it).");
        if (c.VocabSize < Gpt2Tokenizer.EndOfText + 1) throw new ArgumentException($"The model's vocab_size {c.VocabSize} is smaller than GPT-2's BPE vocabulary ({Gpt2Tokenizer.EndOfText + 1}).");
        var corpus = TokenCorpus.Load(o.Files, o.CacheDir, say);
        var data = new LmData(corpus.Tokens, seqLen, o.ValidationFraction);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation windows of {seqLen} tokens");
        return data;
    }

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
