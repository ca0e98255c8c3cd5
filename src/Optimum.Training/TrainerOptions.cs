using Optimum.Core;

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
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Cosine;
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
    /// <summary>Stop (with a checkpoint, as on Ctrl-C) once this many updates are done: time-boxed jobs continue with Resume.</summary>
    public long? StopAfter { get; init; }
    /// <summary>A checkpoint folder to resume from, or <see cref="CheckpointRef.Latest"/> for the newest under OutputDir/checkpoints.</summary>
    public CheckpointRef? Resume { get; init; }
    /// <summary>
    /// Start over in an OutputDir that holds an earlier run: delete its checkpoints/, metrics.jsonl, loss.png, final/ and hf/
    /// first. Without it a new run refuses such a folder (see <see cref="RunFolder"/>); not with <see cref="Resume"/>.
    /// </summary>
    public bool Overwrite { get; init; }
    /// <summary>Write final/ (model folder with the trained weights) and hf/ (HF folder) at the end.</summary>
    public bool Export { get; init; } = true;
    /// <summary>Keep an exponential moving average of the weights (diffusers' EMAModel); it is checkpointed and is what final/ and hf/ get.</summary>
    public EmaOptions? Ema { get; init; }
    public SessionSettings Session { get; init; } = new();
    /// <summary>
    /// Step the optimizer as an ONNX graph in a session on <see cref="SessionSettings.Device"/> (<see cref="Optimizer.UseGraph"/>)
    /// instead of the fused C# update. Same numbers to float rounding; off by default, as on the CPU the fused update is faster.
    /// </summary>
    public bool OptimizerGraph { get; init; }
    /// <summary>
    /// Parameters not to train, by name pattern (<see cref="Freezing"/>: '.'-separated segments, '*' within one, '**' across,
    /// a module name freezes its parameters). They get no gradient, no optimizer state and no share of ZeRO-1 or the
    /// gradient norm; checkpoints leave them out and record their checksum; final/ and hf/ still hold the full model.
    /// </summary>
    public IReadOnlyList<string> Freeze { get; init; } = [];
    /// <summary>
    /// Train a LoRA adapter instead of the model (<c>--lora-r</c>): the kind's graphs are rebuilt with LoRA on the target
    /// modules (into OutputDir/lora-model/), every base parameter is frozen, A gets PEFT's seeded init and B zero; at the
    /// end OutputDir/adapter/ gets the PEFT adapter and final/ and hf/ the merged model. Only through <see cref="TrainingJob"/>.
    /// </summary>
    public Optimum.Onnx.Lora.LoraConfig? Lora { get; init; }
    /// <summary>
    /// What the matrix products compute in (<c>--precision</c>): fp32 (the default; strict float32 on CUDA), tf32 (float32 graphs,
    /// TF32 tensor cores allowed on CUDA; float32 on the CPU), bf16 or fp16 (the model's definition rebuilt with the graph
    /// builder's autocast casts; softmax, norms and the loss stay float32; parameters, gradients and optimizer state are float32
    /// master copies). fp16 scales the loss (<see cref="LossScaling"/>). ONNX Runtime's CPU provider has no bfloat16 MatMul, so
    /// bf16 needs <c>--device cuda</c>.
    /// </summary>
    public TrainingPrecision Precision { get; init; }
    /// <summary>
    /// Keep parameters, gradients and optimizer state in the memory of <see cref="SessionSettings.Device"/> and run the optimizer,
    /// the gradient norm, clipping and accumulation there as ONNX graphs (<see cref="DeviceState"/>), so a step copies only the
    /// loss and the squared gradient norm to the host (ZeRO-1 stages its collectives through host memory). Null (the default):
    /// on for CUDA (unless <see cref="Ema"/>, whose average is kept on the host), off on the CPU, where the host path (fused
    /// C# optimizer) is faster; true on the CPU runs the device path in host memory. True with <see cref="Ema"/> is refused.
    /// </summary>
    public bool? StateOnDevice { get; init; }
    /// <summary>Whether this run keeps its state on the device (<see cref="StateOnDevice"/>, or CUDA without EMA when it is null).</summary>
    public bool KeepsStateOnDevice => StateOnDevice ?? (Session.Device.IsCuda && Ema is null);
    /// <summary>fp16's dynamic loss scaling (torch.amp.GradScaler's defaults); its state is checkpointed so a resume scales as the straight run.</summary>
    public LossScalerOptions LossScaling { get; init; } = new();

    public void Validate()
    {
        if (Steps < 1 || BatchSize < 1 || GradAccum < 1) throw new ArgumentException($"steps {Steps}, batch size {BatchSize} and grad accum {GradAccum} must be positive.");
        if (ClipNorm < 0 || EvalEvery < 0 || SaveEvery < 0 || EvalSamples < 0 || KeepCheckpoints < 1)
            throw new ArgumentException("clip, eval-every, save-every and eval-samples must be >= 0; keep >= 1.");
        if (StopAfter is < 1) throw new ArgumentException($"--stop-after {StopAfter} must be at least 1 update (omit it to run all {Steps} steps).");
        new LrSchedule(Schedule, Lr, Warmup, Steps).Validate();
        Optimizer.Validate();
        Ema?.Validate();
        if (Lora is { } lora)
        {
            lora.Validate();
            if (Freeze.Count > 0) throw new ArgumentException("--freeze does not apply with --lora-r: a LoRA run freezes every base parameter.");
            if (Ema is not null) throw new ArgumentException("--ema is not supported with --lora-r yet.");
        }
        if (!Enum.IsDefined(Precision)) throw new ArgumentException($"Precision {(int)Precision} is not one of {string.Join(", ", EnumNames.Names<TrainingPrecision>())}.");
        if (Precision == TrainingPrecision.Fp16)
        {
            if (!(LossScaling.InitScale > 0 && double.IsFinite(LossScaling.InitScale)))
                throw new ArgumentException($"--loss-scale must be a positive number, got {LossScaling.InitScale}.");
            LossScaling.Validate();
        }
        Precision.CheckDevice(Session.Device);
        if (KeepsStateOnDevice && Ema is not null)
            throw new ArgumentException($"--ema keeps the weights' average in host memory, which a run with its training state on {Session.Device} would copy every step; leave out --state-on-device on to train with --ema.");
        if (Overwrite && Resume is not null) throw new ArgumentException($"--overwrite starts over and --resume {Resume} continues a run: give one of them.");
    }
}

public sealed record StepMetrics(long Step, long TotalSteps, double Loss, double Lr, double GradNorm, double TokensPerSecond,
    double StepSeconds, double OptimizerSeconds, bool Skipped, double ElapsedSeconds, double CommSeconds = 0, double? LossScale = null);
public sealed record EvalMetrics(long Step, double ValidationLoss);
public sealed record TrainResult(long Steps, bool Interrupted, string? LastCheckpoint, IReadOnlyList<StepMetrics> History,
    IReadOnlyList<EvalMetrics> Evals, long SkippedSteps);

/// <summary>Thrown when the loss or the gradient norm stops being finite.</summary>
public sealed class TrainingDivergedException(string message) : InvalidOperationException(message);
