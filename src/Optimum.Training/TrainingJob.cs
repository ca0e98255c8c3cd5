using Optimum.Core;
using Optimum.Data;
using Optimum.Distributed;
using Optimum.Models;
using Optimum.Plots;

namespace Optimum.Training;

/// <summary>Options of a <see cref="TrainingJob"/> beyond the trainer's own.</summary>
/// <param name="Trainer">The trainer's options.</param>
/// <param name="Data">Text files (GPT-2), pair files (T5) or series files (time-series models): what the model's kind reads.</param>
/// <param name="SeqLen">Tokens per causal-LM window (null: 128); refused for kinds that train on whole examples (pairs, series windows, images).</param>
/// <param name="ValidationFraction">Share of the text or pairs held out for validation.</param>
/// <param name="CacheDir">Where token caches go.</param>
/// <param name="Holdout">Time series: points at the end of each series kept out of training windows (default: prediction_length).</param>
/// <param name="LabelDropout">Class-conditional diffusion models: share of labels dropped to the null label (for classifier-free guidance).</param>
/// <param name="DataBlend">Causal LMs: datasets made by preprocess mixed by weight (then <paramref name="Data"/> is empty).</param>
public sealed record TrainingJobOptions(TrainerOptions Trainer, IReadOnlyList<string> Data, int? SeqLen = null, double ValidationFraction = 0.05,
    string? CacheDir = null, int? Holdout = null, double LabelDropout = 0.1, IReadOnlyList<BlendPart>? DataBlend = null);

/// <summary>
/// A whole training run of a model folder on files, for any model kind: the kind opens and checks the data, the
/// weights come from the folder (or the kind's initialisation), the <see cref="Trainer"/> runs, and rank 0 writes
/// what inference needs of the data (e.g. series.json) beside final/ and a loss-curve PNG (loss.png) beside
/// metrics.jsonl. <see cref="Open"/> gives the trainer to observe (progress bars) before <see cref="Run(CancellationToken)"/>;
/// <see cref="Run(TrainingJobOptions, TextWriter, CancellationToken, int)"/> does it all with progress lines. One job at a
/// time in an output folder: it is locked from <see cref="Open"/> to <see cref="Dispose"/>.
/// Owns the trainer and the lock; dispose it.
/// </summary>
public sealed class TrainingJob : IDisposable
{
    private readonly TrainingJobOptions _o;
    private readonly ICommunicator _comm;
    private readonly Action<string> _say;

    private readonly RunFolder _folder;

    private TrainingJob(TrainingJobOptions o, ICommunicator comm, Action<string>? log)
    {
        (_o, _comm) = (o, comm);
        _say = s => { if (comm.Rank == 0) log?.Invoke(s); };
        var t = o.Trainer;
        // The output folder first: a second run into it, or a new run into another run's checkpoints, stops before any work.
        _folder = RunFolder.Claim(t, comm, _say);
        try
        {
            var hf = ModelFolder.ReadConfig(t.ModelDir);
            Kind = ModelKinds.For(hf);
            ModelType = hf.ModelType!;                                                      // For refuses a folder without one
            var config = Kind.ReadConfig(hf);
            Freezing.Resolve(t.Freeze, ModelFolder.ReadParameters(t.ModelDir));                  // a pattern that matches nothing stops before the data is read
            if (t.Lora is not null) Lora = LoraRun.Prepare(t, Kind, config, ModelType, comm);  // targets that match nothing stop before the data is read
            if (o.SeqLen is int seqLen && !Kind.CutsWindows)
                throw new ArgumentException($"--seq-len {seqLen} does not apply to {ModelType} models, which train on {Kind.TrainingData} at the lengths their config.json sets; leave it out.");
            if (o.DataBlend is { Count: > 0 } && !Kind.CutsWindows)
                throw new ArgumentException($"--data-blend does not apply to {ModelType} models, which train on {Kind.TrainingData}.");
            if (o.DataBlend is not { Count: > 0 } && o.Data.Count == 0) throw new ArgumentException($"No training data: give --data ({Kind.TrainingData}) or --data-blend.");
            Data = Kind.OpenTrainingData(new DataOptions(t.ModelDir, o.Data, o.SeqLen, o.ValidationFraction, o.CacheDir, o.Holdout, t.Seed, o.LabelDropout, o.DataBlend), config, _say);
            Trainer.CheckDataFits(Data, t, comm.Size);                                   // before every rank loads weights and sessions
            var weights = ModelKinds.InitialWeights(t.ModelDir, t.Seed, _say);
            var run = t;
            if (Lora is not null)
            {
                // The trainer runs the LoRA folder with every base parameter frozen; the export is the job's (adapter + merged model).
                weights = Lora.InitialWeights(weights, t.Seed);
                run = t with { ModelDir = Lora.ModelDir, Freeze = Lora.Frozen, Lora = null, Export = false };
                _say($"LoRA: r {Lora.Config.R}, alpha {Lora.Config.LoraAlpha}, {Lora.Modules.Count} modules ({string.Join(", ", Lora.Modules.Take(3).Select(m => m.Name))}{(Lora.Modules.Count > 3 ? ", ..." : "")}); graphs in {Lora.ModelDir}");
            }
            // Mixed precision rebuilds the graphs from the definition the run's folder was made from (LoRA's adapted one).
            Trainer = new Trainer(run, Data, weights, comm, t.Precision.IsMixed() ? Lora?.Define ?? Kind.Define(config) : null) { OutputClaimed = true };
        }
        catch
        {
            (Data as IDisposable)?.Dispose();                                            // memory-mapped datasets
            _folder.Dispose();
            throw;
        }
        Trainer.Log += _say;
        _say($"model: {Trainer.Store.Parameters.Count} tensors, {Trainer.Store.Parameters.Sum(p => p.Count):N0} parameters; optimizer state {Trainer.Optimizer.StateBytes / 1e6:F1} MB per rank");
        if (Trainer.Frozen.Count > 0)
            _say($"frozen: {Trainer.Frozen.Count} tensors ({Trainer.Store.Parameters.Where(p => Trainer.Frozen.Contains(p.Name)).Sum(p => p.Count):N0} parameters); training {Trainer.Store.Used:N0} parameters");
        if (t.Precision != TrainingPrecision.Fp32)
            _say($"precision {EnumNames.Name(t.Precision)}: " + t.Precision switch
            {
                TrainingPrecision.Tf32 => t.Session.Device.IsCuda ? "float32 graphs, TF32 tensor cores allowed" : "float32 on the CPU (TF32 is a CUDA tensor-core mode)",
                TrainingPrecision.Fp16 => $"MatMul/Gemm in float16, float32 master weights, dynamic loss scale from {t.LossScaling.InitScale}",
                _ => "MatMul/Gemm in bfloat16, float32 master weights",
            });
        if (Trainer.DeviceState is { } device)
            _say($"training state in {t.Session.Device} memory: {device.Bytes / 1e6:F1} MB (parameters, gradients{(t.GradAccum > 1 || comm.Size > 1 ? ", accumulator" : "")}, optimizer state); the optimizer, norm and clipping run there as graphs");
        if (comm.Size > 1) _say($"ZeRO-1 over {comm.Size} ranks ({comm.Backend}): global batch {t.BatchSize * t.GradAccum * comm.Size} samples");
    }

    /// <summary>
    /// Claims the output folder for the job's lifetime (<see cref="RunFolder"/>: a folder another run holds, or a new run
    /// into one with another run's checkpoints, is refused with <see cref="RunFolderException"/>), then opens the data, the
    /// weights and the trainer of one rank (the only one without <paramref name="comm"/>); <paramref name="log"/> receives
    /// rank 0's messages.
    /// </summary>
    public static TrainingJob Open(TrainingJobOptions options, ICommunicator? comm = null, Action<string>? log = null) =>
        new(options, comm ?? new SingleProcess(), log);

    public IModelKind Kind { get; }
    /// <summary>The LoRA side of a run with <see cref="TrainerOptions.Lora"/> (null otherwise).</summary>
    public LoraRun? Lora { get; }
    /// <summary>The folder's config.json model_type (a kind may read several, e.g. informer and time_series_transformer).</summary>
    public string ModelType { get; }
    public IBatchSource Data { get; }
    public Trainer Trainer { get; }
    /// <summary>Throughput unit of the progress figures ("tok/s", "windows/s").</summary>
    public string ThroughputUnit => Kind.ThroughputUnit;

    /// <summary>Trains; then rank 0 saves the data files beside the output and final/ and plots loss.png.</summary>
    public TrainResult Run(CancellationToken cancel = default)
    {
        var result = Trainer.Run(cancel);
        if (_comm.Rank != 0) return result;
        var t = _o.Trainer;
        if (Lora is not null && t.Export && !result.Interrupted) Lora.Export(Trainer.Store, t.OutputDir, Kind, _say);
        foreach (var dir in new[] { t.OutputDir, Path.Combine(t.OutputDir, "final") }.Where(Directory.Exists))
            Kind.SaveDataFiles(Data, dir);
        if (result.History.Count > 0)
        {
            var png = Path.Combine(t.OutputDir, "loss.png");
            Plot.TrainingCurve(result.History.Select(m => (m.Step, m.Loss)).ToArray(), result.Evals.Select(e => (e.Step, e.ValidationLoss)).ToArray(), png,
                $"{ModelType} on {string.Join(", ", (_o.DataBlend is { Count: > 0 } b ? b.Select(p => p.Prefix) : _o.Data).Select(Path.GetFileName))}");
            _say($"loss curve: {png}; metrics: {Path.Combine(t.OutputDir, "metrics.jsonl")}");
        }
        if (result.SkippedSteps > 0) _say($"{result.SkippedSteps} step(s) skipped for non-finite loss or gradients");
        if (result.Interrupted) _say($"interrupted at step {result.Steps}; checkpoint {result.LastCheckpoint}; continue with Resume = CheckpointRef.Latest (--resume latest)");
        return result;
    }

    /// <summary>
    /// Trains in one call on <paramref name="ranks"/> in-process ranks (threads; ZeRO-1 when more than one), writing
    /// messages, evaluations and about 20 progress lines to <paramref name="progress"/>; returns rank 0's result.
    /// </summary>
    public static TrainResult Run(TrainingJobOptions options, TextWriter? progress = null, CancellationToken cancel = default, int ranks = 1)
    {
        TrainResult One(ICommunicator? comm)
        {
            using var job = Open(options, comm, progress is null ? null : progress.WriteLine);
            if (progress is not null && (comm?.Rank ?? 0) == 0) job.WriteProgressTo(progress);
            return job.Run(cancel);
        }
        return RunFolder.Unwrapped(() => InProcessWorld.RunRanks(ranks, One));
    }

    /// <summary>Writes evaluations and about 20 step lines (loss, lr, gradient norm, throughput, ETA) to <paramref name="output"/>.</summary>
    public void WriteProgressTo(TextWriter output)
    {
        var t = _o.Trainer;
        long every = Math.Max(1, t.Steps / 20);
        Trainer.Evaluated += e => output.WriteLine($"step {e.Step,6}  val_loss {e.ValidationLoss:F4}");
        Trainer.StepCompleted += m =>
        {
            if (m.Step % every != 0 && m.Step != m.TotalSteps && m.Step != 1) return;
            var eta = TimeSpan.FromSeconds(m.ElapsedSeconds / m.Step * (m.TotalSteps - m.Step));
            var comm = m.CommSeconds > 0 ? $"  comm {m.CommSeconds / m.StepSeconds:P0}" : "";
            output.WriteLine($"step {m.Step,6}/{m.TotalSteps}  loss {m.Loss:F4}  lr {m.Lr:E2}  grad_norm {m.GradNorm:F3}  {m.TokensPerSecond,8:N0} {ThroughputUnit}{comm}  eta {eta:hh\\:mm\\:ss}");
        };
    }

    /// <summary>Disposes the trainer and the data (a memory-mapped dataset), then releases the output folder.</summary>
    public void Dispose()
    {
        Trainer.Dispose();
        (Data as IDisposable)?.Dispose();
        _folder.Dispose();
    }
}
