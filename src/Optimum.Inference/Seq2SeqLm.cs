using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Onnx.Proto;
using Optimum.Training;

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

    public Seq2SeqLm(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        ModelDir = modelDir;
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        var cfg = ModelFolder.ReadConfig(modelDir);
        if (cfg.ModelType != "t5") throw new InvalidDataException($"{cfg.Source}: model_type '{cfg.ModelType}' is not an encoder-decoder (t5).");
        VocabSize = cfg.Int("vocab_size", 32128);
        Layers = cfg.OptionalInt("num_decoder_layers") ?? cfg.Int("num_layers", 6);
        Heads = cfg.Int("num_heads", 8);
        HeadSize = cfg.Int("d_kv", 64);
        DecoderStartTokenId = cfg.Int("decoder_start_token_id", 0);
        PadTokenId = cfg.Int("pad_token_id", 0);
        EosTokenId = cfg.OptionalInt("eos_token_id");
        MaxPositions = cfg.Int("n_positions", 512);
        using var options = (settings ?? new SessionSettings()).CreateOptions();
        _encoder = Open(Path.Combine(modelDir, "encoder.onnx"), ps, weights, options);
        _decoder = Open(Path.Combine(modelDir, "decoder.onnx"), ps, weights, options);
    }

    /// <summary>A session over <paramref name="path"/> with the parameters it reads turned into initializers.</summary>
    private static InferenceSession Open(string path, IReadOnlyList<ParameterInfo> ps, IReadOnlyList<float[]> weights, SessionOptions options)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"'{path}' does not exist.", path);
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var inputs = model.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var keep = model.Graph.Input.Where(i => !ps.Any(p => p.Name == i.Name)).ToArray();
        model.Graph.Input.Clear();
        model.Graph.Input.AddRange(keep);
        for (int i = 0; i < ps.Count; i++)
        {
            if (!inputs.Contains(ps[i].Name)) continue;
            var t = new TensorProto { Name = ps[i].Name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weights[i].AsSpan())) };
            t.Dims.AddRange(ps[i].Shape);
            model.Graph.Initializer.Add(t);
        }
        return new InferenceSession(model.ToByteArray(), options);
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
        var outputs = _encoder.Run(run, ["input_ids", "attention_mask"], [idsV, maskV], _encoder.OutputNames);
        return new Encoded(this, _decoder, outputs, mask, rows, len);
    }

    public void Dispose()
    {
        _encoder.Dispose();
        _decoder.Dispose();
    }

    /// <summary>Encoded sources: the encoder output and cross-attention caches; a generative model for the decoder. Dispose it.</summary>
    public sealed class Encoded(Seq2SeqLm lm, InferenceSession decoder, IDisposableReadOnlyCollection<OrtValue> outputs, long[] mask, int rows, int length)
        : IGenerativeModel, IDisposable
    {
        public int VocabSize => lm.VocabSize;
        public int MaxPositions => lm.MaxPositions;
        public int? EosTokenId => lm.EosTokenId;
        public int Rows => rows;
        /// <summary>encoder_last_hidden_state, row-major (rows, length, d_model).</summary>
        public ReadOnlySpan<float> Hidden => outputs[0].GetTensorDataAsSpan<float>();

        public IDecodeState Start() => new State(lm, decoder, outputs, mask, rows, length);

        public void Dispose() => outputs.Dispose();
    }

    private sealed class State : IDecodeState
    {
        private readonly Seq2SeqLm _lm;
        private readonly InferenceSession _session;
        private readonly OrtIoBinding _binding;
        private readonly RunOptions _run = new();
        private readonly List<OrtValue> _inputs = [];
        private readonly string[] _outputNames;
        private readonly IDisposableReadOnlyCollection<OrtValue> _encoded;
        private readonly int _rows;
        private IDisposableReadOnlyCollection<OrtValue>? _outputs;

        public State(Seq2SeqLm lm, InferenceSession session, IDisposableReadOnlyCollection<OrtValue> encoded, long[] mask, int rows, int length)
        {
            _lm = lm;
            _session = session;
            _encoded = encoded;
            _rows = rows;
            _binding = session.CreateIoBinding();
            var maskValue = OrtValue.CreateTensorValueFromMemory(mask, [rows, length]);
            _keep.Add(maskValue);
            _binding.BindInput("encoder_attention_mask", maskValue);
            for (int l = 0; l < lm.Layers; l++)
            {
                _binding.BindInput($"cross_key_values.{l}.key", encoded[1 + 2 * l]);
                _binding.BindInput($"cross_key_values.{l}.value", encoded[2 + 2 * l]);
            }
            _outputNames = ["logits", .. Enumerable.Range(0, lm.Layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
        }

        private readonly List<OrtValue> _keep = [];
        public int Length { get; private set; }

        /// <summary>Feeds decoder tokens (positions and masks are implied: T5's self-attention is causal over the cache).</summary>
        public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch)
        {
            if (batch != _rows) throw new ArgumentException($"Step: batch {batch} differs from the {_rows} encoded rows.");
            int seq = ids.Length / batch;
            foreach (var v in _inputs) v.Dispose();
            _inputs.Clear();
            var idsV = OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]);
            _inputs.Add(idsV);
            _binding.BindInput("input_ids", idsV);
            for (int l = 0; l < _lm.Layers; l++)
                for (int kv = 0; kv < 2; kv++)
                {
                    var name = $"past_key_values.{l}.{(kv == 0 ? "key" : "value")}";
                    if (_outputs is null)
                    {
                        var empty = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _lm.Heads, 0, _lm.HeadSize]);
                        _inputs.Add(empty);
                        _binding.BindInput(name, empty);
                    }
                    else _binding.BindInput(name, _outputs[1 + 2 * l + kv]);
                }
            foreach (var n in _outputNames) _binding.BindOutputToDevice(n, OrtMemoryInfo.DefaultInstance);
            _session.RunWithBinding(_run, _binding);
            var previous = _outputs;
            _outputs = _binding.GetOutputValues();
            previous?.Dispose();
            Length += seq;
            var logits = _outputs[0].GetTensorDataAsSpan<float>();
            if (seq == 1) return logits;
            var last = new float[batch * _lm.VocabSize];
            for (int b = 0; b < batch; b++) logits.Slice(((b + 1) * seq - 1) * _lm.VocabSize, _lm.VocabSize).CopyTo(last.AsSpan(b * _lm.VocabSize));
            return last;
        }

        public void Reorder(int[] rows)
        {
            if (_outputs is null) return;
            for (int k = 1; k < _outputs.Count; k++)
            {
                var data = _outputs[k].GetTensorMutableDataAsSpan<float>();
                int rowLen = data.Length / _rows;
                var copy = data.ToArray();
                for (int i = 0; i < rows.Length; i++) copy.AsSpan(rows[i] * rowLen, rowLen).CopyTo(data.Slice(i * rowLen, rowLen));
            }
        }

        public void Dispose()
        {
            _outputs?.Dispose();
            foreach (var v in _inputs) v.Dispose();
            foreach (var v in _keep) v.Dispose();
            _binding.Dispose();
            _run.Dispose();
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
