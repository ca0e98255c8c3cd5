using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Optimum.Onnx.Proto;
using Optimum.Hub;
using Optimum.Training;

namespace Optimum.Inference;

/// <summary>
/// A causal language model over a model folder's KV-cache decoder (inference.onnx). The weights are
/// turned into the graph's initializers when the session is made, so ONNX Runtime treats them as
/// constants (pre-packed matrices, folded transposes: each token streams the weights once); models
/// too large for one in-memory protobuf keep them as bound inputs. Each generation runs the prompt once, then one token per step,
/// chaining the decoder's present key/value outputs (left in ORT-allocated memory) into the next
/// step's past inputs with <see cref="OrtIoBinding"/>, so the cache never passes through managed arrays.
/// Thread-safe: concurrent generations each get their own binding. Owns its session; dispose it.
/// </summary>
public sealed class CausalLm : IGenerativeModel, IDisposable
{
    private readonly InferenceSession _session;
    private readonly (string Name, OrtValue Value)[] _params;

    public CausalLm(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        ModelDir = modelDir;
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        var inputs = ModelFolder.ReadInputs(modelDir, "inference");
        var past = inputs.Where(i => Regex.IsMatch(i.Name, @"^past_key_values\.\d+\.key$")).ToArray();
        if (past.Length == 0) throw new InvalidDataException($"'{modelDir}' has no KV-cache decoder (no past_key_values inputs in optimum.inference).");
        Layers = past.Length;
        Heads = int.Parse(past[0].Shape[1]);
        HeadSize = int.Parse(past[0].Shape[3]);
        var cfg = ModelFolder.ReadConfig(modelDir);
        VocabSize = cfg.Int("vocab_size", (int)ps[0].Shape[0]);
        MaxPositions = cfg.Int("n_positions", int.MaxValue);
        EosTokenId = cfg.OptionalInt("eos_token_id");
        var path = Path.Combine(modelDir, ModelFolder.InferenceFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{modelDir}' has no {ModelFolder.InferenceFile}.", path);
        using var options = (settings ?? new SessionSettings()).CreateOptions();
        long bytes = ps.Sum(p => p.Count) * sizeof(float);
        if (bytes < MaxEmbeddedBytes)
        {
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
            var names = ps.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            var keep = model.Graph.Input.Where(i => !names.Contains(i.Name)).ToArray();
            model.Graph.Input.Clear();
            model.Graph.Input.AddRange(keep);
            for (int i = 0; i < ps.Count; i++)
            {
                var t = new TensorProto { Name = ps[i].Name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weights[i].AsSpan())) };
                t.Dims.AddRange(ps[i].Shape);
                model.Graph.Initializer.Add(t);
            }
            _session = new InferenceSession(model.ToByteArray(), options);
            _params = [];
        }
        else
        {
            _session = new InferenceSession(path, options);
            _params = ps.Select((p, i) => (p.Name, OrtValue.CreateTensorValueFromMemory(weights[i], p.Shape))).ToArray();
        }
    }

    /// <summary>Models up to this size get their weights embedded as initializers (a protobuf message must stay under 2 GB).</summary>
    public const long MaxEmbeddedBytes = 1_800_000_000;

    public string ModelDir { get; }
    public int Layers { get; }
    public int Heads { get; }
    public int HeadSize { get; }
    public int VocabSize { get; }
    /// <summary>The longest sequence (prompt + generated) the model's positions allow.</summary>
    public int MaxPositions { get; }
    public int? EosTokenId { get; }

    /// <summary>A new decoding state (one sequence batch); dispose it.</summary>
    public DecoderState Start() => new(this, _session, _params);
    IDecodeState IGenerativeModel.Start() => Start();

    /// <summary>Stops ORT's profiler (when the settings enabled it) and returns the trace file.</summary>
    public string EndProfiling() => _session.EndProfiling();

    public void Dispose()
    {
        _session.Dispose();
        foreach (var (_, v) in _params) v.Dispose();
    }
}

/// <summary>What the decoding strategies need of a model: its vocabulary, limits, and a fresh decode state.</summary>
public interface IGenerativeModel
{
    int VocabSize { get; }
    /// <summary>The longest sequence the decoder may reach.</summary>
    int MaxPositions { get; }
    int? EosTokenId { get; }
    IDecodeState Start();
}

/// <summary>One batched decode: feed tokens, get the last position's logits; reorder rows for beam search.</summary>
public interface IDecodeState : IDisposable
{
    int Length { get; }
    ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch);
    void Reorder(int[] rows);
}

/// <summary>
/// The state of one batched decode: bindings, the attention mask and the KV cache as ORT values.
/// <see cref="Step"/> feeds new tokens and returns the logits of the last position of every row.
/// </summary>
public sealed class DecoderState : IDecodeState
{
    private readonly CausalLm _lm;
    private readonly InferenceSession _session;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _run = new();
    private readonly List<OrtValue> _inputs = [];
    private IDisposableReadOnlyCollection<OrtValue>? _outputs;
    private readonly string[] _outputNames;

    internal DecoderState(CausalLm lm, InferenceSession session, (string Name, OrtValue Value)[] parameters)
    {
        _lm = lm;
        _session = session;
        _binding = session.CreateIoBinding();
        foreach (var (name, value) in parameters) _binding.BindInput(name, value);
        _outputNames = ["logits", .. Enumerable.Range(0, lm.Layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
    }

    /// <summary>Cached positions per row (including padding).</summary>
    public int Length { get; private set; }
    public int Batch { get; private set; }

    /// <summary>
    /// Runs <paramref name="ids"/> (batch × seq) at <paramref name="positions"/>, with
    /// <paramref name="mask"/> (batch × (Length + seq)) marking real tokens; returns the last position's
    /// logits, row after row (valid until the next step).
    /// </summary>
    public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch)
    {
        int seq = ids.Length / batch;
        if (positions.Length != ids.Length || mask.Length != batch * (Length + seq))
            throw new ArgumentException($"Step: {ids.Length} ids, {positions.Length} positions and {mask.Length} mask entries do not fit batch {batch}, cache {Length}.");
        if (Length > 0 && batch != Batch) throw new ArgumentException($"Step: batch {batch} differs from the cache's {Batch}.");
        foreach (var v in _inputs) v.Dispose();
        _inputs.Clear();
        OrtValue Bind(string name, OrtValue v) { _inputs.Add(v); _binding.BindInput(name, v); return v; }
        Bind("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]));
        Bind("position_ids", OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]));
        Bind("attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [batch, Length + seq]));
        for (int l = 0; l < _lm.Layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var name = $"past_key_values.{l}.{(kv == 0 ? "key" : "value")}";
                if (_outputs is null) Bind(name, OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _lm.Heads, 0, _lm.HeadSize]));
                else _binding.BindInput(name, _outputs[1 + 2 * l + kv]);
            }
        foreach (var n in _outputNames) _binding.BindOutputToDevice(n, OrtMemoryInfo.DefaultInstance);
        _session.RunWithBinding(_run, _binding);
        var previous = _outputs;
        _outputs = _binding.GetOutputValues();
        previous?.Dispose();                        // the old cache was consumed by this step
        Length += seq;
        Batch = batch;
        var logits = _outputs[0].GetTensorDataAsSpan<float>();
        if (seq == 1) return logits;
        var last = new float[batch * _lm.VocabSize];
        for (int b = 0; b < batch; b++) logits.Slice(((b + 1) * seq - 1) * _lm.VocabSize, _lm.VocabSize).CopyTo(last.AsSpan(b * _lm.VocabSize));
        return last;
    }

    /// <summary>Reorders the cache rows: row i becomes old row <paramref name="rows"/>[i] (beam search).</summary>
    public void Reorder(int[] rows)
    {
        if (_outputs is null) return;
        for (int k = 1; k < _outputs.Count; k++)
        {
            var data = _outputs[k].GetTensorMutableDataAsSpan<float>();
            int rowLen = data.Length / Batch;
            var copy = data.ToArray();
            for (int i = 0; i < rows.Length; i++) copy.AsSpan(rows[i] * rowLen, rowLen).CopyTo(data.Slice(i * rowLen, rowLen));
        }
    }

    public void Dispose()
    {
        _outputs?.Dispose();
        foreach (var v in _inputs) v.Dispose();
        _binding.Dispose();
        _run.Dispose();
    }
}
