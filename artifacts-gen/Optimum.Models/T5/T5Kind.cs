namespace Optimum.Models;

/// <summary>T5 (model_type t5): an encoder-decoder trained on (source, target) pairs, served by cached greedy/beam decoding.</summary>
public sealed class T5Kind : ModelKind<T5Config>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["t5"];
    public override string TrainingData => "(source, target) pair files (.tsv or .jsonl)";


    public override Func<GraphBuilder, bool, ModelOutputs> Define(T5Config c) => (g, training) => T5.DefineLm(g, training, c);

    /// <summary>Writes config.json, training.onnx, eval.onnx, encoder.onnx and decoder.onnx.</summary>
    public override void Write(string dir, T5Config c)
    {
        var encoder = new GraphBuilder("t5_encoder");
        T5.DefineEncoder(encoder, c);
        var decoder = new GraphBuilder("t5_decoder");
        T5.DefineDecoder(decoder, c);
        Artifacts.Write(dir, "t5", c.ToHf(), Define(c), [(ModelFolder.EncoderFile, "encoder", encoder), (ModelFolder.DecoderFile, "decoder", decoder)]);
    }

    /// <summary>HF's T5PreTrainedModel._init_weights.</summary>
    public override float[][] Initialize(IReadOnlyList<ParameterInfo> ps, T5Config c, int seed)
    {
        var rng = new Random(seed);
        double f = c.InitializerFactor;
        return ps.Select(p =>
        {
            string n = p.Name;
            if (n.EndsWith("layer_norm.weight", StringComparison.Ordinal)) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            double std = n switch
            {
                "shared.weight" or "lm_head.weight" => f,
                _ when n.EndsWith(".q.weight", StringComparison.Ordinal) => f * Math.Pow(c.DModel * c.DKv, -0.5),
                _ when n.EndsWith(".k.weight", StringComparison.Ordinal) || n.EndsWith(".v.weight", StringComparison.Ordinal) => f * Math.Pow(c.DModel, -0.5),
                _ when n.EndsWith(".o.weight", StringComparison.Ordinal) => f * Math.Pow(c.NumHeads * c.DKv, -0.5),
                _ when n.Contains("relative_attention_bias", StringComparison.Ordinal) => f * Math.Pow(c.DModel, -0.5),
                _ when n.EndsWith(".wo.weight", StringComparison.Ordinal) => f * Math.Pow(c.DFf, -0.5),
                _ => f * Math.Pow(c.DModel, -0.5),                                                  // wi, wi_0, wi_1
            };
            return HfWeights.Normal(rng, p.Count, std);
        }).ToArray();
    }

    /// <summary>(source, target) pairs from TSV or JSONL files, tokenized with the model folder's vocab.json or spiece.model.</summary>
    public override IBatchSource OpenTrainingData(DataOptions o, T5Config c, Action<string> say)
    {
        var tok = PairTokenizers.Load(o.ModelDir);
        if (tok.VocabSize > c.VocabSize) throw new InvalidDataException($"The tokenizer of {o.ModelDir} has {tok.VocabSize} tokens but the model's vocab_size is {c.VocabSize}.");
        var pairs = o.Files.SelectMany(Seq2SeqData.ReadPairs).ToArray();
        var encoded = pairs.Select(p => (tok.EncodeSource(p.Source), tok.EncodeTarget(p.Target))).ToArray();
        int longest = encoded.Max(p => Math.Max(p.Item1.Length, p.Item2.Length));
        if (longest > c.MaxLength) throw new InvalidDataException($"A pair encodes to {longest} tokens, more than the model's n_positions {c.MaxLength}.");
        var data = new Seq2SeqData(encoded, o.ValidationFraction, c.PadTokenId);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation pairs from {o.Files.Count} file(s)");
        return data;
    }

    /// <summary>
    /// The HF folder's tokenizer (spiece.model or vocab.json), checked to load and to fit the vocabulary: generation needs
    /// it beside the weights. A folder without one exports without one (a data-built vocab.json can be added later).
    /// </summary>
    public override void ImportFiles(string hfDir, string modelDir)
    {
        if (!HasTokenizer(hfDir)) return;
        var tok = PairTokenizers.Copy(hfDir, modelDir);
        var c = ReadConfig(HfConfig.Load(Path.Combine(hfDir, ModelFolder.ConfigFile)));
        if (tok.VocabSize > c.VocabSize)
            throw new InvalidDataException($"The tokenizer of '{hfDir}' has {tok.VocabSize} tokens but its config.json's vocab_size is {c.VocabSize}.");
    }

    /// <summary>The model folder's tokenizer (when it has one) beside trained weights written for transformers.</summary>
    public override void ExportFiles(string modelDir, string hfDir)
    {
        if (HasTokenizer(modelDir)) PairTokenizers.Copy(modelDir, hfDir);
    }

    private static bool HasTokenizer(string dir) => PairTokenizers.Files.Any(f => File.Exists(Path.Combine(dir, f)));

    public override LoadedModel Load(string dir, SessionSettings? settings = null)
    {
        var lm = new Seq2SeqLm(dir, settings: settings);
        try
        {
            var tok = PairTokenizers.Load(dir);
            return new LoadedModel(dir, TextGenerator.ForSeq2Seq(lm, tok.EncodeSource, ids => tok.DecodeTarget(ids), tok.VocabSize), lm);
        }
        catch
        {
            lm.Dispose();
            throw;
        }
    }
}
