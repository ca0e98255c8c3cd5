using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Training;

/// <summary>
/// Runs a model folder's training and eval graphs with plain <see cref="InferenceSession"/>s.
/// Parameters and gradients are the <see cref="ParameterStore"/>'s views, bound once with
/// <see cref="OrtIoBinding"/>; a step copies nothing but the batch arrays' binding and the loss.
/// The eval graph's session is opened at the first <see cref="EvalLoss"/> and closed by <see cref="ReleaseEval"/>, so
/// a run holds its memory (ORT's arena, the planned activations) only while it evaluates.
/// The session does not own the store; dispose the session first.
/// </summary>
public sealed class TrainingSession : IDisposable
{
    private readonly ParameterStore _store;
    private readonly InferenceSession _train;
    private InferenceSession? _eval;
    private readonly RunBinding _trainBinding;
    private RunBinding? _evalBinding;
    private readonly string _modelDir;
    private readonly SessionSettings _settings;
    private readonly List<string> _evalProfiles = [];
    private readonly RunOptions _run = new();
    private readonly float[] _trainLoss = new float[1];
    private readonly float[] _evalLoss = new float[1];
    private readonly long[] _seed = new long[1];
    private readonly List<OrtValue> _owned = [];
    private readonly Dictionary<(bool, string), (Array Data, long[] Shape, OrtValue Value)> _bound = [];

    /// <param name="modelDir">The model folder: its parameter list, and its training.onnx and eval.onnx unless <paramref name="graphs"/> is given.</param>
    /// <param name="store">The flat parameter and gradient buffers the graphs are bound to.</param>
    /// <param name="settings">Session settings (threads, arena, device).</param>
    /// <param name="graphs">Graphs to run instead of the folder's (mixed precision); their parameters must be the folder's.</param>
    /// <param name="device">Training state in device memory: the sessions bind its views instead of the store's (the store is its host mirror).</param>
    public TrainingSession(string modelDir, ParameterStore store, SessionSettings? settings = null, TrainingGraphs? graphs = null, DeviceState? device = null)
    {
        _graphs = graphs;
        _device = device;
        _store = store;
        settings ??= new SessionSettings();
        (_modelDir, _settings) = (modelDir, settings);
        var declared = ModelFolder.ReadParameters(modelDir);
        if (!declared.Select(p => (p.Name, string.Join(",", p.Shape))).SequenceEqual(store.Parameters.Select(p => (p.Name, string.Join(",", p.Shape)))))
            throw new InvalidDataException($"'{modelDir}' declares parameters that differ from the store's.");
        // A parameter the folder trains but the store does not is frozen: the folder's training graph is run without its gradient.
        if (declared.Zip(store.Parameters).FirstOrDefault(x => !x.First.Trainable && x.Second.Trainable) is { First: not null } buffer)
            throw new InvalidDataException($"'{modelDir}' declares '{buffer.First.Name}' a buffer (never trained), but the store trains it.");
        Frozen = declared.Zip(store.Parameters).Where(x => x.First.Trainable && !x.Second.Trainable).Select(x => x.First.Name).ToArray();
        graphs?.CheckParameters(declared, modelDir);
        TrainInputs = graphs?.TrainInputs ?? ModelFolder.ReadInputs(modelDir, "training").Select(i => i.Name).ToArray();
        EvalInputs = graphs?.EvalInputs ?? ModelFolder.ReadInputs(modelDir, "eval").Select(i => i.Name).ToArray();
        using var options = settings.CreateOptions(training: true);
        var evalPath = Path.Combine(modelDir, ModelFolder.EvalFile);
        if (graphs is null && !File.Exists(evalPath)) throw new FileNotFoundException($"Graph '{evalPath}' does not exist.", evalPath);
        _train = graphs is null ? Open(Path.Combine(modelDir, ModelFolder.TrainingFile), options, Frozen) : Open(graphs.Training, options, Frozen);
        _trainBinding = new RunBinding(_train, settings.Device.IsCuda);
        var trainOutputs = graphs?.TrainOutputs ?? ReadOutputs(modelDir, "training");
        for (int i = 0; i < store.Parameters.Count; i++)
        {
            var p = store.Parameters[i];
            _trainBinding.BindInput(p.Name, device?.ParamValue(i) ?? store.ParamValue(i));
            if (p.Trainable) _trainBinding.BindOutput(TrainingGraph.GradPrefix + p.Name, device?.GradValue(i) ?? store.GradValue(i));
            else if (trainOutputs.Contains(TrainingGraph.UpdatePrefix + p.Name))
            {
                // The buffer's new value lands beside the store and is copied in after the run (ORT must not write an input it reads).
                var next = new float[p.Count];
                _trainBinding.BindOutput(TrainingGraph.UpdatePrefix + p.Name, Own(OrtValue.CreateTensorValueFromMemory(next, p.Shape)));
                _updates.Add((i, next));
            }
        }
        _trainBinding.BindOutput("loss", Own(OrtValue.CreateTensorValueFromMemory(_trainLoss, [])));
        _evalLossValue = Own(OrtValue.CreateTensorValueFromMemory(_evalLoss, []));
        _evalSeed = Own(OrtValue.CreateTensorValueFromMemory(new long[1], []));
        if (TrainInputs.Contains(GraphInputs.DropoutSeed))
            _trainBinding.BindInput(GraphInputs.DropoutSeed, Own(OrtValue.CreateTensorValueFromMemory(_seed, [])));
        if (UsesLossScale)
            _trainBinding.BindInput(GraphInputs.LossScale, Own(OrtValue.CreateTensorValueFromMemory(_lossScale, [])));
        UpdatedBuffers = _updates.Select(u => u.Index).ToArray();
    }

    private readonly TrainingGraphs? _graphs;
    private readonly DeviceState? _device;
    private readonly float[] _lossScale = [1f];
    private readonly OrtValue _evalLossValue;
    private readonly OrtValue _evalSeed;

    /// <summary>The eval session with the parameters bound (opened now if it is not open).</summary>
    private RunBinding OpenEval()
    {
        if (_eval is not null) return _evalBinding!;
        using var options = _settings.CreateOptions(training: true);
        var eval = _graphs is null ? Open(Path.Combine(_modelDir, ModelFolder.EvalFile), options) : Open(_graphs.Eval, options);
        var binding = new RunBinding(eval, _settings.Device.IsCuda);
        for (int i = 0; i < _store.Parameters.Count; i++) binding.BindInput(_store.Parameters[i].Name, _device?.ParamValue(i) ?? _store.ParamValue(i));
        binding.BindOutput("loss", _evalLossValue);
        // Graphs with random choices outside dropout (ProbSparse attention's key sampling) take a seed in eval too: a fixed one.
        if (EvalInputs.Contains(GraphInputs.DropoutSeed)) binding.BindInput(GraphInputs.DropoutSeed, _evalSeed);
        (_eval, _evalBinding) = (eval, binding);
        return binding;
    }

    /// <summary>
    /// Closes the eval session, returning what it holds (its arena, its planned activations, the batch bindings) to the
    /// system; the next <see cref="EvalLoss"/> opens it again. The trainer calls it after each evaluation.
    /// </summary>
    public void ReleaseEval()
    {
        if (_eval is null) return;
        if (_settings.ProfilePrefix is not null) _evalProfiles.Add(_eval.EndProfiling());
        _evalBinding!.Dispose();
        _eval.Dispose();
        (_eval, _evalBinding) = (null, null);
        foreach (var key in _bound.Keys.Where(k => !k.Item1).ToArray())
        {
            _bound[key].Value.Dispose();
            _bound.Remove(key);
        }
    }

    private readonly List<(int Index, float[] Next)> _updates = [];

    private static HashSet<string> ReadOutputs(string dir, string graph) =>
        (ModelFolder.ReadConfig(dir).Json["optimum"]?[graph]?["outputs"]?.AsArray() ?? [])
            .Select(o => o?["name"]?.GetValue<string>() ?? "").ToHashSet(StringComparer.Ordinal);

    /// <summary>Store indices of the buffers the training graph updates each step (e.g. BatchNorm running statistics).</summary>
    public IReadOnlyList<int> UpdatedBuffers { get; }

    /// <summary>Trainable parameters of the model folder that the store does not train (frozen), in graph order.</summary>
    public IReadOnlyList<string> Frozen { get; }

    private static InferenceSession Open(string path, SessionOptions options, IReadOnlyList<string>? frozen = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Graph '{path}' does not exist.", path);
        if (frozen is not { Count: > 0 }) return new InferenceSession(path, options);
        // The frozen variant is made in memory from the folder's graph, so every model kind freezes without its definition.
        return new InferenceSession(TrainingGraph.Freeze(File.ReadAllBytes(path), frozen), options);
    }

    private static InferenceSession Open(byte[] model, SessionOptions options, IReadOnlyList<string>? frozen = null) =>
        new(frozen is { Count: > 0 } ? TrainingGraph.Freeze(model, frozen) : model, options);

    private OrtValue Own(OrtValue v)
    {
        _owned.Add(v);
        return v;
    }

    /// <summary>Data inputs of the training graph (parameters excluded).</summary>
    public IReadOnlyList<string> TrainInputs { get; }
    public IReadOnlyList<string> EvalInputs { get; }
    /// <summary>True when the training graph takes a per-step dropout seed.</summary>
    public bool UsesDropoutSeed => TrainInputs.Contains(GraphInputs.DropoutSeed);
    /// <summary>True when the training graph takes a loss scale (fp16 graphs, <see cref="GraphInputs.LossScale"/>): its gradients are scaled by <see cref="LossScale"/>.</summary>
    public bool UsesLossScale => TrainInputs.Contains(GraphInputs.LossScale);
    /// <summary>What the training graph's backward pass starts from (fp16 graphs; 1 by default): the gradients come out multiplied by it.</summary>
    public float LossScale
    {
        get => _lossScale[0];
        set => _lossScale[0] = UsesLossScale ? value : throw new InvalidOperationException("This training graph takes no loss scale (only fp16 graphs do).");
    }

    /// <summary>
    /// One forward + backward: the gradients land in the store's gradient buffer. Returns the loss.
    /// <paramref name="dropoutSeed"/> (in [0, 2^31)) fixes every dropout mask of the step.
    /// </summary>
    public float TrainStep(Batch batch, long dropoutSeed = 0)
    {
        Bind(_trainBinding, training: true, TrainInputs, batch);
        _seed[0] = dropoutSeed;
        _trainBinding.Run(_run);
        foreach (var (i, next) in _updates)
        {
            next.CopyTo(_store.Param(i));
            _device?.SetParam(i, next);           // small buffers (BatchNorm statistics): through the host
        }
        return _trainLoss[0];
    }

    /// <summary>The eval graph's loss on <paramref name="batch"/> (no gradients).</summary>
    public float EvalLoss(Batch batch)
    {
        var binding = OpenEval();
        Bind(binding, training: false, EvalInputs, batch);
        binding.Run(_run);
        return _evalLoss[0];
    }

    private void Bind(RunBinding binding, bool training, IReadOnlyList<string> inputs, Batch batch)
    {
        foreach (var name in inputs)
        {
            if (name is GraphInputs.DropoutSeed or GraphInputs.LossScale) continue;
            if (!batch.TryGetValue(name, out var t))
                throw new ArgumentException($"The batch lacks '{name}', an input of the {(training ? "training" : "eval")} graph (it has: {string.Join(", ", batch.Keys)}).");
            var key = (training, name);
            // The same array, refilled, stays bound (on a device RunBinding.Run copies its new contents).
            if (_bound.TryGetValue(key, out var b) && ReferenceEquals(b.Data, t.Data) && b.Shape.AsSpan().SequenceEqual(t.Shape)) continue;
            if (b.Value is not null) b.Value.Dispose();
            var value = t.Data switch
            {
                long[] l => OrtValue.CreateTensorValueFromMemory(l, t.Shape),
                float[] f => OrtValue.CreateTensorValueFromMemory(f, t.Shape),
                _ => throw new ArgumentException($"Batch tensor '{name}' must be long[] or float[], got {t.Data.GetType().Name}."),
            };
            binding.BindInput(name, value);
            _bound[key] = (t.Data, t.Shape.ToArray(), value);
        }
    }

    /// <summary>Stops ORT's profiler (when enabled) and returns the trace files written.</summary>
    public IReadOnlyList<string> EndProfiling()
    {
        ReleaseEval();
        return [_train.EndProfiling(), .. _evalProfiles];
    }

    public void Dispose()
    {
        _trainBinding.Dispose();
        _evalBinding?.Dispose();
        _train.Dispose();
        _eval?.Dispose();
        _run.Dispose();
        foreach (var v in _owned) v.Dispose();
        foreach (var b in _bound.Values) b.Value.Dispose();
    }
}
