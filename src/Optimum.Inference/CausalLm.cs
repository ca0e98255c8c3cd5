using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Inference;

/// <summary>
/// A causal language model over a model folder's KV-cache decoder (inference.onnx). The weights are
/// turned into the graph's initializers when the session is made, so ONNX Runtime treats them as
/// constants (pre-packed matrices, folded transposes: each token streams the weights once); models
/// too large for one in-memory protobuf keep them as bound inputs. Each generation runs the prompt once, then one token per step,
/// chaining the decoder's present key/value outputs (left in ORT-allocated memory) into the next
/// step's past inputs with <see cref="OrtIoBinding"/>, so the cache never passes through managed arrays; on a GPU it stays in
/// the GPU's memory (<see cref="DevicePlacement"/>), and only the logits are copied to the host each step.
/// Thread-safe: concurrent generations each get their own binding. Owns its session; dispose it.
/// </summary>
public sealed class CausalLm : IGenerativeModel, IDisposable
{
    private readonly InferenceSession _session;
    private readonly (string Name, OrtValue Value)[] _params;
    private readonly OrtAllocator? _paramsAllocator;           // CUDA: allocated the weights copied to the device
    private readonly SessionSettings _settings;
    private CacheOps? _ops;

    public CausalLm(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        ModelDir = modelDir;
        _settings = settings ?? new SessionSettings();
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        (Layers, Heads, HeadSize, VocabSize, MaxPositions, EosTokenId) = ReadShape(modelDir);
        var path = InferencePath(modelDir);
        using var options = _settings.CreateOptions();
        if (EmbeddedWeights.Fits(ps))
        {
            _session = EmbeddedWeights.Open(path, ps, weights, options);
            _params = [];
        }
        else
        {
            _session = new InferenceSession(path, options);
            // Bound inputs, copied to the device once (CUDA) rather than by every step; on the CPU views of the arrays.
            var placement = DevicePlacement.Of(_settings);
            var bound = new List<(string, OrtValue)>(ps.Count);
            try
            {
                using var copier = placement.IsHost ? null : new Optimum.Onnx.DeviceCopy(_settings);
                for (int i = 0; i < ps.Count; i++) bound.Add((ps[i].Name, placement.ToResident(_session, weights[i], ps[i].Shape, ref _paramsAllocator, copier is null ? null : copier.Copy)));
            }
            catch
            {
                foreach (var (_, v) in bound) v.Dispose();
                _paramsAllocator?.Dispose();
                _session.Dispose();
                throw;
            }
            _params = [.. bound];
        }
    }

    /// <summary>
    /// A decoder over <paramref name="modelDir"/>'s shapes whose session <paramref name="open"/> makes (e.g. over weights shared
    /// with other sessions); <paramref name="release"/> runs after the session is disposed.
    /// </summary>
    internal CausalLm(string modelDir, Func<InferenceSession> open, Action release, Lora.AdapterInfo? adapter, SessionSettings settings)
    {
        ModelDir = modelDir;
        _settings = settings;
        (Layers, Heads, HeadSize, VocabSize, MaxPositions, EosTokenId) = ReadShape(modelDir);
        _session = open();
        _params = [];
        _release = release;
        Adapter = adapter;
    }

    private Action? _release;

    /// <summary>The inference graph's path; a missing file names the folder.</summary>
    internal static string InferencePath(string modelDir)
    {
        var path = Path.Combine(modelDir, ModelFolder.InferenceFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{modelDir}' has no {ModelFolder.InferenceFile}.", path);
        return path;
    }

    private static (int, int, int, int, int, int?) ReadShape(string modelDir)
    {
        var inputs = ModelFolder.ReadInputs(modelDir, "inference");
        var past = inputs.Where(i => Regex.IsMatch(i.Name, @"^past_key_values\.\d+\.key$")).ToArray();
        if (past.Length == 0) throw new InvalidDataException($"'{modelDir}' has no KV-cache decoder (no past_key_values inputs in optimum.inference).");
        var c = Gpt2Config.FromHf(ModelFolder.ReadConfig(modelDir));
        return (past.Length, int.Parse(past[0].Shape[1]), int.Parse(past[0].Shape[3]), c.VocabSize, c.NPositions, c.EosTokenId);
    }

    /// <summary>Set when this decoder is a LoRA adapter served over a base (<see cref="Lora.AdapterHost"/>): which adapter, and its settings.</summary>
    public Lora.AdapterInfo? Adapter { get; }

    public string ModelDir { get; }
    public int Layers { get; }
    public int Heads { get; }
    public int HeadSize { get; }
    public int VocabSize { get; }
    /// <summary>The longest sequence (prompt + generated) the model's positions allow.</summary>
    public int MaxPositions { get; }
    public int? EosTokenId { get; }

    /// <summary>A new decoding state (one sequence batch); dispose it.</summary>
    public DecoderState Start() => new(this, _session, _params, Placement, CacheOps);
    IDecodeState IGenerativeModel.Start() => Start();

    /// <summary>Where the cache lives between steps (the settings' device).</summary>
    internal DevicePlacement Placement => DevicePlacement.Of(_settings);

    /// <summary>The cache-edit graphs when the settings ask for them (made on first use, owned here); null: span copies.</summary>
    internal CacheOps? CacheOps => CacheOps.For(_settings, ref _ops);

    internal InferenceSession Session => _session;
    /// <summary>Weights bound as inputs (models too large to embed them); empty otherwise.</summary>
    internal IReadOnlyList<(string Name, OrtValue Value)> BoundParameters => _params;

    /// <summary>Stops ORT's profiler (when the settings enabled it) and returns the trace file.</summary>
    public string EndProfiling() => _session.EndProfiling();

    public void Dispose()
    {
        // As the constructor's error path: the bound values, the allocator they came from, then its session.
        foreach (var (_, v) in _params) v.Dispose();
        _paramsAllocator?.Dispose();
        _session.Dispose();
        _ops?.Dispose();
        Interlocked.Exchange(ref _release, null)?.Invoke();     // once, however often Dispose is called
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

/// <summary>The decode state of a causal LM: input_ids, position_ids and attention_mask per step.</summary>
public sealed class DecoderState : KvCacheState
{
    internal DecoderState(CausalLm lm, InferenceSession session, (string Name, OrtValue Value)[] parameters, DevicePlacement placement, CacheOps? ops)
        : base(session, lm.Layers, lm.Heads, lm.HeadSize, lm.VocabSize, placement, ops)
    {
        foreach (var (name, value) in parameters) Binding.BindInput(name, value);
    }

    /// <summary>
    /// <paramref name="ids"/> (batch × seq) at <paramref name="positions"/>, with <paramref name="mask"/>
    /// (batch × (Length + seq)) marking real tokens.
    /// </summary>
    protected override void BindInputs(long[] ids, long[] positions, long[] mask, int batch, int seq, Action<string, OrtValue> bind)
    {
        if (positions.Length != ids.Length || mask.Length != batch * (Length + seq))
            throw new ArgumentException($"Step: {ids.Length} ids, {positions.Length} positions and {mask.Length} mask entries do not fit batch {batch}, cache {Length}.");
        bind("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]));
        bind("position_ids", OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]));
        bind("attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [batch, Length + seq]));
    }
}
