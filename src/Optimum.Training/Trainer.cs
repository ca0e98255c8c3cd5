using System.Diagnostics;
using System.Text.Json;
using Optimum.Hub;
using Optimum.Training.Data;

namespace Optimum.Training;

/// <summary>Everything a training run is configured by.</summary>
public sealed record TrainerOptions
{
    /// <summary>Model folder with config.json, training.onnx and eval.onnx.</summary>
    public required string ModelDir { get; init; }
    /// <summary>Receives checkpoints/, metrics.jsonl, final/ and hf/.</summary>
    public required string OutputDir { get; init; }
    public long Steps { get; init; } = 200;
    /// <summary>Samples per micro-batch.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches per update (their gradients are averaged).</summary>
    public int GradAccum { get; init; } = 1;
    public OptimizerConfig Optimizer { get; init; } = new();
    public string Schedule { get; init; } = "cosine";
    public double Lr { get; init; } = 6e-4;
    public long Warmup { get; init; } = 20;
    /// <summary>Global gradient-norm clip (0 = off).</summary>
    public double ClipNorm { get; init; } = 1.0;
    /// <summary>Evaluate every N updates (0 = only at the end).</summary>
    public int EvalEvery { get; init; } = 50;
    /// <summary>Also evaluate before the first update of a fresh run (the baseline the curve falls from).</summary>
    public bool EvalAtStart { get; init; } = true;
    /// <summary>Validation samples per evaluation (0 = all).</summary>
    public int EvalSamples { get; init; } = 64;
    /// <summary>Checkpoint every N updates (0 = only at the end and on interrupt).</summary>
    public int SaveEvery { get; init; } = 100;
    public int KeepCheckpoints { get; init; } = 2;
    public int Seed { get; init; }
    /// <summary>Skip (and count) updates whose loss or gradient norm is not finite instead of stopping.</summary>
    public bool SkipNonFinite { get; init; }
    /// <summary>A checkpoint folder to resume from, or "latest" for the newest under OutputDir/checkpoints.</summary>
    public string? Resume { get; init; }
    /// <summary>Write final/ (model folder with the trained weights) and hf/ (HF folder) at the end.</summary>
    public bool Export { get; init; } = true;
    public SessionSettings Session { get; init; } = new();

    public void Validate()
    {
        if (Steps < 1 || BatchSize < 1 || GradAccum < 1) throw new ArgumentException($"steps {Steps}, batch size {BatchSize} and grad accum {GradAccum} must be positive.");
        if (ClipNorm < 0 || EvalEvery < 0 || SaveEvery < 0 || EvalSamples < 0 || KeepCheckpoints < 1)
            throw new ArgumentException("clip, eval-every, save-every and eval-samples must be >= 0; keep >= 1.");
        new LrSchedule(Schedule, Lr, Warmup, Steps).Validate();
        Optimizer.Validate();
    }
}

public sealed record StepMetrics(long Step, long TotalSteps, double Loss, double Lr, double GradNorm, double TokensPerSecond,
    double StepSeconds, double OptimizerSeconds, bool Skipped, double ElapsedSeconds);
public sealed record EvalMetrics(long Step, double ValidationLoss);
public sealed record TrainResult(long Steps, bool Interrupted, string? LastCheckpoint, IReadOnlyList<StepMetrics> History,
    IReadOnlyList<EvalMetrics> Evals, long SkippedSteps);

/// <summary>Thrown when the loss or the gradient norm stops being finite.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>
/// The training loop: batches from a seeded sample index, forward + backward in ONNX Runtime into
/// the flat gradient buffer, gradient accumulation, global-norm clipping, a fused optimizer update,
/// evaluation, atomic checkpoints, exact resume and a clean stop on cancellation (Ctrl-C).
/// Owns its store, session and optimizer.
/// </summary>
public sealed class Trainer : IDisposable
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

    public Trainer(TrainerOptions options, IBatchSource data, IReadOnlyList<float[]> initialWeights)
    {
        options.Validate();
        _o = options;
        _data = data;
        _store = new ParameterStore(ModelFolder.ReadParameters(options.ModelDir));
        try
        {
            _store.Load(initialWeights);
            _session = new TrainingSession(options.ModelDir, _store, options.Session);
            _opt = Optimizer.Create(_store, options.Optimizer);
        }
        catch
        {
            _store.Dispose();
            throw;
        }
        _schedule = new LrSchedule(options.Schedule, options.Lr, options.Warmup, options.Steps);
        if (options.GradAccum > 1) _accum = new float[_store.Length];
    }

    public ParameterStore Store => _store;
    public TrainingSession Session => _session;
    public Optimizer Optimizer => _opt;
    public string CheckpointRoot => Path.Combine(_o.OutputDir, "checkpoints");

    public event Action<StepMetrics>? StepCompleted;
    public event Action<EvalMetrics>? Evaluated;
    public event Action<string>? Log;

    private static readonly JsonSerializerOptions MetricsJson = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    private long SamplesPerStep => (long)_o.BatchSize * _o.GradAccum;

    public TrainResult Run(CancellationToken cancel = default)
    {
        Directory.CreateDirectory(_o.OutputDir);
        long start = 0, skipped = 0;
        if (_o.Resume is { } r)
        {
            var dir = r == "latest" ? Checkpoints.Latest(CheckpointRoot) ?? throw new DirectoryNotFoundException($"No checkpoint under '{CheckpointRoot}' to resume from.") : r;
            var state = Checkpoints.Load(dir, _store, _opt);
            CheckCompatible(state, dir);
            (start, skipped) = (state.Step, state.SkippedSteps);
            Log?.Invoke($"resumed from {dir} at step {start}");
        }
        if (_data.TrainSamples < _o.BatchSize)
            throw new InvalidDataException($"The data has {_data.TrainSamples} training samples, fewer than one batch of {_o.BatchSize}.");
        var index = new SampleIndex(_data.TrainSamples, _o.Steps * SamplesPerStep, _o.Seed);
        var history = new List<StepMetrics>();
        var evals = new List<EvalMetrics>();
        string? last = null;
        using var metrics = new StreamWriter(Path.Combine(_o.OutputDir, "metrics.jsonl"), append: start > 0);
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
            if (cancel.IsCancellationRequested) { interrupted = true; break; }
            var t0 = clock.Elapsed.TotalSeconds;
            var (loss, tokens) = ForwardBackward(index, step);
            double norm = Math.Sqrt(VectorMath.SumSquares(_store.AllGrads[..(int)_store.Used]));
            bool bad = !double.IsFinite(loss) || !double.IsFinite(norm);
            if (bad && !_o.SkipNonFinite)
                throw new TrainingDivergedException($"Step {step + 1}: the {(double.IsFinite(loss) ? "gradient norm" : "loss")} is {(double.IsFinite(loss) ? norm : loss)}; lower the learning rate or pass --skip-nonfinite.");
            double lr = _schedule.At(step), optSeconds = 0;
            if (bad) skipped++;
            else
            {
                if (_o.ClipNorm > 0 && norm > _o.ClipNorm) VectorMath.Scale(_store.AllGrads, (float)(_o.ClipNorm / (norm + 1e-6)));
                var o0 = clock.Elapsed.TotalSeconds;
                _opt.Step(step + 1 - skipped, lr);
                optSeconds = clock.Elapsed.TotalSeconds - o0;
            }
            var dt = clock.Elapsed.TotalSeconds - t0;
            var m = new StepMetrics(step + 1, _o.Steps, loss, lr, norm, tokens / dt, dt, optSeconds, bad, clock.Elapsed.TotalSeconds);
            history.Add(m);
            metrics.WriteLine(JsonSerializer.Serialize(new { step = m.Step, loss = m.Loss, lr = m.Lr, grad_norm = m.GradNorm, tokens_per_s = m.TokensPerSecond, step_s = m.StepSeconds, optimizer_s = m.OptimizerSeconds, skipped = m.Skipped }, MetricsJson));
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
        if (step > start || interrupted) last = Save(step, skipped);
        if (!interrupted && _o.Export) ExportFinal();
        return new TrainResult(step, interrupted, last, history, evals, skipped);
    }

    private (double Loss, long Tokens) ForwardBackward(SampleIndex index, long step)
    {
        double loss = 0;
        long tokens = 0;
        var grads = _store.AllGrads;
        for (int micro = 0; micro < _o.GradAccum; micro++)
        {
            _data.FillTrain(index.Slice((step * _o.GradAccum + micro) * _o.BatchSize, _o.BatchSize), _train);
            loss += _session.TrainStep(_train, Seeds.Derive(_o.Seed, step, micro, 0));
            tokens += _train.Tokens;
            if (_accum is not null)
            {
                if (micro == 0) grads.CopyTo(_accum);
                else VectorMath.Add(_accum, grads);
            }
        }
        if (_accum is not null)
        {
            _accum.CopyTo(grads);
            VectorMath.Scale(grads, 1f / _o.GradAccum);
        }
        return (loss / _o.GradAccum, tokens);
    }

    /// <summary>Mean validation loss over the first EvalSamples validation samples (all when 0).</summary>
    public double Evaluate()
    {
        long n = _o.EvalSamples == 0 ? _data.ValidationSamples : Math.Min(_o.EvalSamples, _data.ValidationSamples);
        if (n == 0) return double.NaN;
        double sum = 0;
        for (long first = 0; first < n; first += _o.BatchSize)
        {
            int count = (int)Math.Min(_o.BatchSize, n - first);
            _data.FillValidation(first, count, _val);
            sum += _session.EvalLoss(_val) * count;
        }
        return sum / n;
    }

    private string Save(long step, long skipped)
    {
        var state = new TrainerState
        {
            Step = step, SamplesSeen = step * SamplesPerStep, SkippedSteps = skipped, Seed = _o.Seed, TotalSteps = _o.Steps,
            BatchSize = _o.BatchSize, GradAccum = _o.GradAccum, Optimizer = _o.Optimizer.Kind, Schedule = _o.Schedule, Lr = _o.Lr, Warmup = _o.Warmup,
        };
        var dir = Checkpoints.Save(CheckpointRoot, _store, _opt, state, _o.KeepCheckpoints);
        Log?.Invoke($"checkpoint {dir}");
        return dir;
    }

    private void CheckCompatible(TrainerState s, string dir)
    {
        void Same<T>(string what, T saved, T now)
        {
            if (!EqualityComparer<T>.Default.Equals(saved, now))
                throw new InvalidDataException($"Checkpoint '{dir}' was made with {what} {saved}; this run has {now}. Resuming needs the same value.");
        }
        Same("seed", s.Seed, _o.Seed);
        Same("batch size", s.BatchSize, _o.BatchSize);
        Same("grad accum", s.GradAccum, _o.GradAccum);
        Same("total steps", s.TotalSteps, _o.Steps);
        Same("optimizer", s.Optimizer, _o.Optimizer.Kind);
        if (s.Step > _o.Steps) throw new InvalidDataException($"Checkpoint '{dir}' is at step {s.Step}, past the run's {_o.Steps} steps.");
    }

    /// <summary>final/: the model folder with the trained weights (graphs copied); hf/: config.json + model.safetensors for transformers.</summary>
    private void ExportFinal()
    {
        var final = Path.Combine(_o.OutputDir, "final");
        Directory.CreateDirectory(final);
        foreach (var f in new[] { ModelFolder.ConfigFile, ModelFolder.TrainingFile, ModelFolder.EvalFile, ModelFolder.InferenceFile })
        {
            var src = Path.Combine(_o.ModelDir, f);
            if (File.Exists(src)) Optimum.Onnx.AtomicFile.Write(Path.Combine(final, f), File.ReadAllBytes(src));
        }
        var weights = _store.Export();
        HfWeights.Save(Path.Combine(final, ModelFolder.WeightsFile), _store.Parameters, weights);
        ModelFolder.ExportHf(_o.ModelDir, _store.Parameters, weights, Path.Combine(_o.OutputDir, "hf"));
        Log?.Invoke($"exported {final} and {Path.Combine(_o.OutputDir, "hf")}");
    }

    public void Dispose()
    {
        _session.Dispose();
        _opt.Dispose();
        _store.Dispose();
    }
}
