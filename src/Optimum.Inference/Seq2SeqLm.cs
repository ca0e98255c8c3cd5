using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Inference;

/// <summary>
/// An encoder-decoder model (T5) over a model folder's encoder.onnx and decoder.onnx. The encoder runs
/// once per input and also yields every decoder layer's cross-attention keys/values; the decoder then
/// runs one token per step with its self-attention cache chained through OrtIoBinding, as
/// <see cref="CausalLm"/> does. Weights are embedded as initializers. Owns its sessions; dispose it.
/// </summary>
public sealed class Seq2SeqLm : IDisposable
{
    private readonly InferenceSession _encoder, _decoder;
    private readonly SessionSettings _settings;
    private CacheOps? _ops;

    public Seq2SeqLm(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        ModelDir = modelDir;
        _settings = settings ?? new SessionSettings();
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        var c = T5Config.FromHf(ModelFolder.ReadConfig(modelDir));
        (VocabSize, Layers, Heads, HeadSize) = (c.VocabSize, c.NumDecoderLayers, c.NumHeads, c.DKv);
        (DecoderStartTokenId, PadTokenId, EosTokenId, MaxPositions) = (c.DecoderStartTokenId, c.PadTokenId, c.EosTokenId, c.MaxLength);
        using var options = _settings.CreateOptions();
        if (!EmbeddedWeights.Fits(ps)) throw new NotSupportedException($"'{modelDir}': T5 models over {EmbeddedWeights.MaxBytes / 1e9:F1} GB are not supported for generation yet.");
        _encoder = EmbeddedWeights.Open(Path.Combine(modelDir, ModelFolder.EncoderFile), ps, weights, options);
        try { _decoder = EmbeddedWeights.Open(Path.Combine(modelDir, ModelFolder.DecoderFile), ps, weights, options); }
        catch
        {
            _encoder.Dispose();
            throw;
        }
        MasksDecoder = _decoder.InputMetadata.ContainsKey("decoder_attention_mask");
    }

    public string ModelDir { get; }
    public int VocabSize { get; }
    public int Layers { get; }
    public int Heads { get; }
    public int HeadSize { get; }
    public int DecoderStartTokenId { get; }
    public int PadTokenId { get; }
    public int? EosTokenId { get; }
    public int MaxPositions { get; }
    /// <summary>
    /// True when decoder.onnx takes decoder_attention_mask (folders exported since continuous batching came to T5):
    /// rows of different target lengths can then share a decoder step. Older folders generate one request at a time.
    /// </summary>
    public bool MasksDecoder { get; }
    /// <summary>Where decoder caches and encoder outputs live between steps (the settings' device).</summary>
    internal DevicePlacement Placement => DevicePlacement.Of(_settings);
    /// <summary>The cache-edit graphs when the settings ask for them (made on first use, owned here); null: span copies.</summary>
    internal CacheOps? CacheOps => CacheOps.For(_settings, ref _ops);
    internal InferenceSession EncoderSession => _encoder;
    internal InferenceSession DecoderSession => _decoder;

    /// <summary>
    /// Runs the encoder on a batch of sources (right-padded with an attention mask) and returns a model
    /// view whose decode states generate for them; each row may be repeated <paramref name="repeat"/> times (beams).
    /// </summary>
    public Encoded Encode(IReadOnlyList<IReadOnlyList<int>> sources, int repeat = 1)
    {
        if (sources.Count == 0 || sources.Any(s => s.Count == 0)) throw new ArgumentException("Every source needs at least one token.", nameof(sources));
        int rows = sources.Count * repeat, len = sources.Max(s => s.Count);
        if (len > MaxPositions) throw new ArgumentException($"A source of {len} tokens exceeds the model's {MaxPositions}.");
        var ids = new long[rows * len];
        var mask = new long[rows * len];
        for (int r = 0; r < rows; r++)
        {
            var s = sources[r / repeat];
            for (int t = 0; t < s.Count; t++) { ids[r * len + t] = s[t]; mask[r * len + t] = 1; }
            for (int t = s.Count; t < len; t++) ids[r * len + t] = PadTokenId;
        }
        using var idsV = OrtValue.CreateTensorValueFromMemory(ids, [rows, len]);
        using var maskV = OrtValue.CreateTensorValueFromMemory(mask, [rows, len]);
        using var run = new RunOptions();
        // The hidden state is read from C# (Hidden): host memory; the cross keys/values only feed the decoder, every step:
        // resident memory, so a GPU keeps them.
        using var binding = _encoder.CreateIoBinding();
        binding.BindInput("input_ids", idsV);
        binding.BindInput("attention_mask", maskV);
        var placement = Placement;
        foreach (var name in _encoder.OutputNames)
            binding.BindOutputToDevice(name, name == "encoder_last_hidden_state" ? placement.Host : placement.Resident);
        _encoder.RunWithBinding(run, binding);
        var outputs = binding.GetOutputValues();
        return new Encoded(this, _decoder, outputs, mask, rows, len);
    }

    public void Dispose()
    {
        _encoder.Dispose();
        _decoder.Dispose();
        _ops?.Dispose();
    }

    /// <summary>Encoded sources: the encoder output and cross-attention caches; a generative model for the decoder. Dispose it.</summary>
    public sealed class Encoded(Seq2SeqLm lm, InferenceSession decoder, IDisposableReadOnlyCollection<OrtValue> outputs, long[] mask, int rows, int length)
        : IGenerativeModel, IDisposable
    {
        public int VocabSize => lm.VocabSize;
        public int MaxPositions => lm.MaxPositions;
        public int? EosTokenId => lm.EosTokenId;
        public int Rows => rows;
        /// <summary>Source positions (the longest source's length).</summary>
        public int Length => length;
        /// <summary>encoder_last_hidden_state then cross_key_values.{l}.key/value (rows, heads, length, d_kv) per layer.</summary>
        internal IReadOnlyList<OrtValue> Outputs => outputs;
        /// <summary>encoder_last_hidden_state, row-major (rows, length, d_model).</summary>
        public ReadOnlySpan<float> Hidden => outputs[0].GetTensorDataAsSpan<float>();

        public IDecodeState Start() => new State(lm, decoder, outputs, mask, rows, length);

        public void Dispose() => outputs.Dispose();
    }

    /// <summary>The decode state of the T5 decoder: its input_ids per step; the encoder mask and cross caches are bound once.</summary>
    private sealed class State : KvCacheState
    {
        private readonly OrtValue _mask;
        private readonly int _rows;
        private readonly bool _masksDecoder;

        public State(Seq2SeqLm lm, InferenceSession session, IDisposableReadOnlyCollection<OrtValue> encoded, long[] mask, int rows, int length)
            : base(session, lm.Layers, lm.Heads, lm.HeadSize, lm.VocabSize, lm.Placement, lm.CacheOps)
        {
            _rows = rows;
            _masksDecoder = lm.MasksDecoder;
            _mask = OrtValue.CreateTensorValueFromMemory(mask, [rows, length]);
            Binding.BindInput("encoder_attention_mask", _mask);
            for (int l = 0; l < lm.Layers; l++)
            {
                Binding.BindInput($"cross_key_values.{l}.key", encoded[1 + 2 * l]);
                Binding.BindInput($"cross_key_values.{l}.value", encoded[2 + 2 * l]);
            }
        }

        /// <summary>
        /// Decoder tokens and, where the decoder takes one, its mask (batch, cache + seq), all ones when
        /// <paramref name="mask"/> does not cover the cache: positions are relative, so there are none to bind.
        /// </summary>
        protected override void BindInputs(long[] ids, long[] positions, long[] mask, int batch, int seq, Action<string, OrtValue> bind)
        {
            if (batch != _rows) throw new ArgumentException($"Step: batch {batch} differs from the {_rows} encoded rows.");
            bind("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]));
            if (!_masksDecoder) return;
            int total = Length + seq;
            if (mask.Length != batch * total) mask = Enumerable.Repeat(1L, batch * total).ToArray();
            bind("decoder_attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [batch, total]));
        }

        public override void Dispose()
        {
            base.Dispose();
            _mask.Dispose();
        }
    }

    /// <summary>
    /// Generates for a batch of sources: greedy or sampled for all rows at once, beam search per source.
    /// Returns the new target tokens (after decoder_start, without EOS).
    /// </summary>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<IReadOnlyList<int>> sources, GenerationOptions o,
        Func<int, IReadOnlyList<int>, bool>? onToken = null, CancellationToken cancel = default)
    {
        o = o with { EosTokenId = o.EosTokenId ?? EosTokenId };
        if (o.NumBeams > 1)
            return sources.Select(s =>
            {
                using var enc = Encode([s], o.NumBeams);
                return Generator.BeamSearch(enc, [DecoderStartTokenId], o, cancel);
            }).ToArray();
        using var encoded = Encode(sources);
        return Generator.Generate(encoded, sources.Select(_ => (IReadOnlyList<int>)[DecoderStartTokenId]).ToArray(), o, onToken, cancel);
    }
}
