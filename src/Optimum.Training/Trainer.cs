using System.Diagnostics;
using System.Text.Json;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Data;
using Optimum.Core;

namespace Optimum.Training;

/// <summary>
/// The training loop: batches from a seeded sample index, forward + backward in ONNX Runtime into
/// the flat gradient buffer, gradient accumulation, global-norm clipping, a fused optimizer update,
/// evaluation, atomic checkpoints, exact resume and a clean stop on cancellation (Ctrl-C).
/// With a communicator of N ranks it is ZeRO-1 data parallelism: each rank computes gradients on
/// its own samples, a reduce-scatter leaves each rank the averaged gradient of its shard, each rank
/// updates only its shard with only its shard's optimizer state, and an all-gather reassembles the
/// parameters. Owns its store, session and optimizer (not the communicator).
/// </summary>
public sealed partial class Trainer : IDisposable
{
    private readonly TrainerOptions _o;
    private readonly IBatchSource _data;
    private readonly ParameterStore _store;
    private readonly TrainingSession _session;
    private readonly Optimizer _opt;
    private readonly LrSchedule _schedule;
    private readonly float[]? _accum;
    private readonly Batch _train = new();
    private readonly Batch _val = new();
    private readonly ICommunicator _comm;
    private readonly float[]? _shardGrads;
    private readonly EmaWeights? _ema;
    private readonly LossScaler? _scaler;
    private readonly DeviceState? _device;
    private double _commSeconds;

    /// <summary>The smallest loss scale an fp16 run goes on with: below it float16 gradients are lost at any scale.</summary>
    public const double MinLossScale = 1.0 / (1 << 24);

    /// <summary>
    /// A trainer of <paramref name="options"/>' model folder on <paramref name="data"/> from <paramref name="initialWeights"/>
    /// (one array per parameter, in the folder's order); ZeRO-1 over <paramref name="communicator"/>'s ranks. With
    /// <see cref="TrainerOptions.Precision"/> bf16 or fp16 the graphs are rebuilt from the folder kind's definition.
    /// </summary>
    public Trainer(TrainerOptions options, IBatchSource data, IReadOnlyList<float[]> initialWeights, ICommunicator? communicator = null)
        : this(options, data, initialWeights, communicator, null)
    {
    }

    /// <summary>As the public constructor; <paramref name="define"/> is the definition mixed-precision graphs are built from (a LoRA run's adapted one), null for the folder kind's.</summary>
    internal Trainer(TrainerOptions options, IBatchSource data, IReadOnlyList<float[]> initialWeights, ICommunicator? communicator, Func<Optimum.Onnx.GraphBuilder, bool, Optimum.Onnx.ModelOutputs>? define)
    {
        options.Validate();
        if (options.Lora is not null)
            throw new ArgumentException($"{nameof(TrainerOptions)}.{nameof(TrainerOptions.Lora)} is applied by {nameof(TrainingJob)} (it builds the LoRA graphs and weights); a {nameof(Trainer)} runs a model folder as it is.");
        _o = options;
        _data = data;
        _comm = communicator ?? new SingleProcess();
        var parameters = ModelFolder.ReadParameters(options.ModelDir);
        Frozen = Freezing.Resolve(options.Freeze, parameters);
        _store = new ParameterStore(Freezing.Apply(parameters, Frozen), _comm.Size);
        try
        {
            _store.Load(initialWeights);
            // Frozen weights never change: their checksum, taken once, goes into every checkpoint.
            _frozenSha256 = Frozen.Count > 0 ? Freezing.Checksum(_store, Frozen) : null;
            // fp32 is strict float32 on CUDA (ORT's CUDA provider allows TF32 by default); tf32 allows it. Both are float32 on the CPU.
            var settings = options.Session with { Tf32 = options.Session.Tf32 ?? options.Precision == TrainingPrecision.Tf32 };
            var graphs = MixedGraphs(options, define);
            var (begin, end) = _store.Shard(_comm.Rank);
            _opt = Optimizer.Create(_store, options.Optimizer, begin, end);
            // On the device the optimizer always runs as a graph, over the device's copy of its state (the host's is the mirror).
            if (options.KeepsStateOnDevice) _device = new DeviceState(_store, _opt, settings, accumulate: options.GradAccum > 1 || _comm.Size > 1);
            else if (options.OptimizerGraph) _opt.UseGraph(settings);
            _session = new TrainingSession(options.ModelDir, _store, settings, graphs, _device);
        }
        catch
        {
            // The session is bound to the store's memory: it goes first.
            _session?.Dispose();
            _device?.Dispose();
            _opt?.Dispose();
            _store.Dispose();
            throw;
        }
        _schedule = new LrSchedule(options.Schedule, options.Lr, options.Warmup, options.Steps);
        if (options.GradAccum > 1 && _device is null) _accum = new float[_store.Length];        // the device state accumulates in its own memory
        if (_comm.Size > 1) _shardGrads = new float[_store.ShardLength];
        // Only rank 0 writes checkpoints and the export, so only it keeps the average (every rank has all weights after the all-gather).
        if (options.Ema is { } ema && Lead) _ema = new EmaWeights(_store, ema);
        if (options.Precision == TrainingPrecision.Fp16) _scaler = new LossScaler(options.LossScaling);
    }

    /// <summary>
    /// The bf16/fp16 graphs of a mixed-precision run (null otherwise), built from <paramref name="define"/> or the folder kind's
    /// definition.
    /// </summary>
    private static TrainingGraphs? MixedGraphs(TrainerOptions o, Func<Optimum.Onnx.GraphBuilder, bool, Optimum.Onnx.ModelOutputs>? define)
    {
        if (!o.Precision.IsMixed()) return null;
        var name = EnumNames.Name(o.Precision);
        var hf = ModelFolder.ReadConfig(o.ModelDir);
        if (define is null)
        {
            var kind = Optimum.Models.ModelKinds.For(hf);
            define = kind.Define(kind.ReadConfig(hf))
                ?? throw new NotSupportedException($"--precision {name}: {hf.ModelType} models do not expose their graph definition, so their graphs cannot be rebuilt in {name}.");
        }
        return TrainingGraphs.Build(hf.ModelType ?? "model", define, o.Precision);
    }

    /// <summary>The training state in device memory (<see cref="TrainerOptions.StateOnDevice"/>), or null when it is the host's.</summary>
    public DeviceState? DeviceState => _device;

    /// <summary>fp16's loss scaler (null for other precisions): its scale and skipped-step count.</summary>
    public LossScaler? LossScaler => _scaler;

    public ICommunicator Communicator => _comm;
    /// <summary>Names of the frozen parameters (<see cref="TrainerOptions.Freeze"/>), in graph order.</summary>
    public IReadOnlyList<string> Frozen { get; }
    private readonly string? _frozenSha256;
    private bool Lead => _comm.Rank == 0;

    /// <summary>Times a collective so that steps report their communication share.</summary>
    private T Timed<T>(Func<T> f)
    {
        var t = Stopwatch.GetTimestamp();
        var r = f();
        _commSeconds += Stopwatch.GetElapsedTime(t).TotalSeconds;
        return r;
    }

    public ParameterStore Store => _store;
    public TrainingSession Session => _session;
    public Optimizer Optimizer => _opt;
    /// <summary>The moving average of the weights (rank 0 of a run with <see cref="TrainerOptions.Ema"/>; null otherwise).</summary>
    public EmaWeights? Ema => _ema;
    public string CheckpointRoot => Path.Combine(_o.OutputDir, "checkpoints");

    public event Action<StepMetrics>? StepCompleted;
    public event Action<EvalMetrics>? Evaluated;
    public event Action<string>? Log;

    private static readonly JsonSerializerOptions MetricsJson = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,    // loss_scale: fp16 runs only
    };

    /// <summary>Samples per update over all ranks.</summary>
    private long SamplesPerStep => (long)_o.BatchSize * _o.GradAccum * _comm.Size;

    /// <summary>
    /// Refuses data with fewer training samples than one update takes over all ranks (batch size x grad accum x
    /// ranks): every update would repeat samples. Cheap; run it before loading weights on many ranks.
    /// </summary>
    public static void CheckDataFits(IBatchSource data, TrainerOptions o, int ranks)
    {
        long global = (long)o.BatchSize * o.GradAccum * ranks;
        if (data.TrainSamples < global)
            throw new InvalidDataException(global == o.BatchSize
                ? $"The data has {data.TrainSamples:N0} training samples, fewer than one batch of {o.BatchSize}."
                : $"The data has {data.TrainSamples:N0} training samples, fewer than one update takes: batch size {o.BatchSize} x grad accum {o.GradAccum} x {ranks} rank(s) = {global:N0}.");
    }

    /// <summary>Set by a <see cref="TrainingJob"/> that claimed the output folder for its whole run; otherwise <see cref="Run"/> claims it.</summary>
    internal bool OutputClaimed { get; set; }

    /// <summary>
    /// Trains from step 0 (or the <see cref="TrainerOptions.Resume"/> checkpoint) to <see cref="TrainerOptions.Steps"/>, holding
    /// the output folder (<see cref="RunFolder"/>) meanwhile: a folder another run holds, or a new run into one with another
    /// run's checkpoints, is refused with <see cref="RunFolderException"/> before anything is written.
    /// </summary>
    public TrainResult Run(CancellationToken cancel = default)
    {
        using var claim = OutputClaimed ? null : RunFolder.Claim(_o, _comm, s => Log?.Invoke(s));
        _comm.Barrier();
        // Ranks on several machines must share the checkpoint folder; found out now, not at the first save.
        SharedStorage.Verify(CheckpointRoot, _comm);
        long start = 0, skipped = 0;
        if (_o.Resume is { } r)
        {
            var dir = r.Resolve(CheckpointRoot);
            CheckCompatible(Checkpoints.ReadState(dir), dir);
            var state = Checkpoints.Load(dir, _store, _opt, _ema, _scaler);
            _device?.Upload();
            (start, skipped) = (state.Step, state.SkippedSteps);
            if (Lead) Log?.Invoke($"resumed from {dir} at step {start} ({state.WorldSize} rank(s) then, {_comm.Size} now)");
        }
        CheckDataFits(_data, _o, _comm.Size);
        var index = new SampleIndex(_data.TrainSamples, _o.Steps * SamplesPerStep, _o.Seed);
        var history = new List<StepMetrics>();
        var evals = new List<EvalMetrics>();
        string? last = null;
        var metricsPath = Path.Combine(_o.OutputDir, "metrics.jsonl");
        if (Lead && start > 0 && File.Exists(metricsPath))
        {
            // Lines past the checkpoint belong to the run being replaced: drop them. So do lines without a step (the half-written
            // last line of a killed run, or damage): the log is an output, and must not stop a resume.
            var lines = File.ReadLines(metricsPath).Select(l => (Text: l, Step: MetricsStep(l))).ToArray();
            if (lines.Count(l => l.Step is null) is var unreadable and > 0) Log?.Invoke($"warning: dropped {unreadable} unreadable line(s) of {metricsPath}");
            AtomicFile.Write(metricsPath, System.Text.Encoding.UTF8.GetBytes(string.Concat(lines.Where(l => l.Step <= start).Select(l => l.Text + "\n"))));
        }
        using var metrics = Lead ? new StreamWriter(metricsPath, append: start > 0) : StreamWriter.Null;
        if (start == 0 && _o.EvalAtStart)
        {
            var e0 = new EvalMetrics(0, Evaluate());
            evals.Add(e0);
            metrics.WriteLine(JsonSerializer.Serialize(new { step = 0, val_loss = e0.ValidationLoss }, MetricsJson));
            Evaluated?.Invoke(e0);
        }
        var clock = Stopwatch.StartNew();
        bool interrupted = false;
        long step = start;
        for (; step < _o.Steps; step++)
        {
            // Every rank must stop at the same step, so a stop request on any rank is agreed on collectively.
            bool stop = cancel.IsCancellationRequested || (_o.StopAfter is { } sa && step >= sa);
            if (_comm.Size > 1) stop = _comm.AllReduceSum(stop ? 1.0 : 0.0) > 0;
            if (stop) { interrupted = true; break; }
            FaultInjection.AtStep(_comm.Rank, step + 1);
            var t0 = clock.Elapsed.TotalSeconds;
            _commSeconds = 0;
            // The forward pass moves buffers (BatchNorm running statistics); a skipped step must not keep that.
            var buffersBefore = _session.UpdatedBuffers.Select(b => _store.Param(b).ToArray()).ToArray();
            if (_scaler is not null) _session.LossScale = _scaler.Scale;
            var (weightedLoss, weight, tokens) = ForwardBackward(index, step);
            // Buffers updated by the forward pass (BatchNorm running statistics) saw only this rank's samples: average them.
            if (_comm.Size > 1)
                foreach (var b in _session.UpdatedBuffers)
                    Timed(() => { var v = _store.Param(b); _comm.AllReduceSum(v); VectorMath.Scale(v, 1f / _comm.Size); _device?.SetParam(b, v.ToArray()); return 0; });
            var (loss, total) = (weight > 0 ? weightedLoss / weight : 0, weight);
            if (_shardGrads is not null) (loss, total, tokens) = ReduceShard(weightedLoss, weight, tokens);
            // fp16: the gradients are of loss x scale; the norm, clipping and the update see the true ones (GradScaler.unscale_).
            if (_scaler is not null) ScaleShard((float)(1.0 / _scaler.Scale));
            double local = ShardSumSquares();
            double norm = Math.Sqrt(_comm.Size > 1 ? Timed(() => _comm.AllReduceSum(local)) : local);
            // A step whose batches have no target to learn from (every future unobserved) is skipped, not an error.
            bool empty = total == 0;
            if (empty && Lead) Log?.Invoke($"step {step + 1}: the batch has no observed targets (loss weight 0); skipped");
            bool bad = empty || !double.IsFinite(loss) || !double.IsFinite(norm);
            // fp16 gradients that overflow under a finite loss are the loss scale's business: skip the step and lower the scale.
            // The norm is summed over every rank, so all ranks agree. A non-finite loss is the forward pass's, which no scale fixes.
            bool overflow = _scaler is not null && !empty && double.IsFinite(loss) && !double.IsFinite(norm);
            double? scaleUsed = _scaler?.Scale;
            if (_scaler is not null && !empty && double.IsFinite(loss))
            {
                _scaler.Update(foundInf: overflow);
                if (overflow && Lead) Log?.Invoke($"step {step + 1}: fp16 gradients overflowed at loss scale {scaleUsed}; skipped, loss scale now {_scaler.Scale}");
                if (_scaler.Scale < MinLossScale)
                    throw new TrainingDivergedException($"Step {step + 1}: the fp16 loss scale fell to {_scaler.Scale} after {_scaler.Skipped} overflowed step(s): the gradients overflow float16 at any scale; train in fp32 (or bf16 on CUDA) or lower the learning rate.");
            }
            if (bad && !empty && !overflow && !_o.SkipNonFinite)
                throw new TrainingDivergedException($"Step {step + 1}: the {(double.IsFinite(loss) ? "gradient norm" : "loss")} is {(double.IsFinite(loss) ? norm : loss)}; lower the learning rate or pass --skip-nonfinite.");
            double lr = _schedule.At(step), optSeconds = 0;
            if (bad)
            {
                skipped++;
                for (int i = 0; i < buffersBefore.Length; i++) SetBuffer(_session.UpdatedBuffers[i], buffersBefore[i]);
            }
            else
            {
                if (_o.ClipNorm > 0 && norm > _o.ClipNorm) ScaleShard((float)(_o.ClipNorm / (norm + 1e-6)));
                var o0 = clock.Elapsed.TotalSeconds;
                if (_device is not null) _device.Step(step + 1 - skipped, lr);
                else _opt.Step(step + 1 - skipped, lr);
                optSeconds = clock.Elapsed.TotalSeconds - o0;
                if (_comm.Size > 1) GatherParams();
                _ema?.Update(step + 1 - skipped);
            }
            var dt = clock.Elapsed.TotalSeconds - t0;
            var m = new StepMetrics(step + 1, _o.Steps, loss, lr, norm, tokens / dt, dt, optSeconds, bad, clock.Elapsed.TotalSeconds, _commSeconds, scaleUsed);
            history.Add(m);
            metrics.WriteLine(JsonSerializer.Serialize(new { step = m.Step, loss = m.Loss, lr = m.Lr, grad_norm = m.GradNorm, tokens_per_s = m.TokensPerSecond, step_s = m.StepSeconds, optimizer_s = m.OptimizerSeconds, skipped = m.Skipped, comm_s = m.CommSeconds, loss_scale = m.LossScale }, MetricsJson));
            StepCompleted?.Invoke(m);
            if ((_o.EvalEvery > 0 && (step + 1) % _o.EvalEvery == 0) || step + 1 == _o.Steps)
            {
                var e = new EvalMetrics(step + 1, Evaluate());
                evals.Add(e);
                metrics.WriteLine(JsonSerializer.Serialize(new { step = e.Step, val_loss = e.ValidationLoss }, MetricsJson));
                Evaluated?.Invoke(e);
            }
            metrics.Flush();
            if (_o.SaveEvery > 0 && (step + 1) % _o.SaveEvery == 0 && step + 1 < _o.Steps) last = Save(step + 1, skipped);
        }
        if ((step > start || interrupted) && step != _lastSaved) last = Save(step, skipped);
        // The host mirror holds the trained weights and state when Run returns (Store, Optimizer, the export).
        _device?.Download();
        if (!interrupted && _o.Export && Lead) ExportFinal();
        _comm.Barrier();
        return new TrainResult(step, interrupted, last, history, evals, skipped);
    }

    /// <summary>Mean validation loss over the first EvalSamples validation samples (all when 0); ranks share the batches.</summary>
    public double Evaluate()
    {
        long n = _o.EvalSamples == 0 ? _data.ValidationSamples : Math.Min(_o.EvalSamples, _data.ValidationSamples);
        if (n == 0) return double.NaN;
        // Weighted like training: by the terms each batch's mean loss averages (target tokens for T5).
        double sum = 0, weight = 0;
        long batchIndex = 0;
        for (long first = 0; first < n; first += _o.BatchSize, batchIndex++)
        {
            if (batchIndex % _comm.Size != _comm.Rank) continue;
            int count = (int)Math.Min(_o.BatchSize, n - first);
            _data.FillValidation(first, count, _val);
            double w = _val.LossWeight ?? count;
            sum += _session.EvalLoss(_val) * w;
            weight += w;
        }
        // Training does not need the eval session's memory: given back until the next evaluation.
        _session.ReleaseEval();
        return _comm.AllReduceSum(sum) / _comm.AllReduceSum(weight);
    }

    public void Dispose()
    {
        _session.Dispose();
        _device?.Dispose();
        _opt.Dispose();
        _store.Dispose();
    }
}
