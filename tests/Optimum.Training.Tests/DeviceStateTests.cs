using Optimum.Core;
using Optimum.Data;
using Optimum.Distributed;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Training.Tests;

/// <summary>
/// Training state in device memory (TrainerOptions.StateOnDevice, DeviceState): on the CPU the "device" is host memory from
/// ORT, and every operation between the backward pass and the next step runs as the ONNX graphs a GPU would run (copies,
/// scaling, accumulation, the norm, the optimizer). Checked against the host path: the same run to rounding (the norm is
/// summed in float32 by the graph, in double on the host), ZeRO-1 staged through the host, exact resume, fp16.
/// </summary>
public sealed class DeviceStateTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly Gpt2Config Tiny = TinyLm.Config(dropout: 0.1);

    private string Gpt2() => TinyLm.Folder(_dir, Tiny);

    private static LmData LmData() => TinyLm.Data();

    private float[][] Init() => ModelKinds.Initialize(ModelFolder.ReadParameters(Gpt2()), Tiny, 1);

    private TrainerOptions Options(string outDir, bool device, OptimizerKind optimizer = OptimizerKind.AdamW, int accum = 1, long steps = 8) => new()
    {
        ModelDir = Gpt2(), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 6 / accum, GradAccum = accum, Lr = 5e-3, Warmup = 2,
        Schedule = ScheduleKind.Linear, ClipNorm = 0.3, Optimizer = new OptimizerConfig { Kind = optimizer, Momentum = 0.9, WeightDecay = 0.1 },
        EvalEvery = 4, EvalSamples = 12, SaveEvery = 0, Seed = 5, Export = false, Session = new SessionSettings { IntraOpThreads = 1 }, StateOnDevice = device,
    };

    private static (float[][] Weights, TrainResult Result, float[] State) Train(TrainerOptions o, float[][] init, ICommunicator? comm = null)
    {
        using var t = new Trainer(o, LmData(), init, comm);
        var r = t.Run();
        return (t.Store.Export(), r, t.Optimizer.State(0).ToArray());
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd, 1)]
    [InlineData(OptimizerKind.Sgd, 2)]
    [InlineData(OptimizerKind.AdamW, 1)]
    [InlineData(OptimizerKind.AdamW, 3)]
    public void OnTheCpu_TheDevicePath_MatchesTheHostPath(OptimizerKind optimizer, int accum)
    {
        var init = Init();
        var (host, rh, stateHost) = Train(Options("host", false, optimizer, accum), init);
        var (device, rd, stateDevice) = Train(Options("device", true, optimizer, accum), init);
        Assert.True(rh.History.Any(m => m.GradNorm > 0.3), "clipping never engaged");
        double weights = Diff.MaxRelative(host, device, floor: 1e-3), state = Diff.MaxRelative([stateHost], [stateDevice], floor: 1e-6);
        double loss = rh.History.Zip(rd.History).Max(p => Math.Abs(p.First.Loss - p.Second.Loss) / p.First.Loss);
        double norm = rh.History.Zip(rd.History).Max(p => Math.Abs(p.First.GradNorm - p.Second.GradNorm) / p.First.GradNorm);
        output.WriteLine($"{optimizer} accum {accum}: weights {weights:E2}, optimizer state {state:E2}, losses {loss:E2}, norms {norm:E2} (max relative)");
        Assert.True(norm <= 1e-5, $"gradient norms differ by {norm:E2}");
        Assert.True(loss <= 1e-5, $"losses differ by {loss:E2}");
        // AdamW divides by sqrt(v): rounding of near-zero gradients shows in single elements, so its tensors are compared normwise (as Zero1Tests do).
        double normwise = host.Zip(device).Max(p => Math.Sqrt(p.First.Zip(p.Second).Sum(x => Math.Pow(x.First - x.Second, 2)) / Math.Max(p.First.Sum(x => (double)x * x), 1e-30)));
        output.WriteLine($"  weights normwise {normwise:E2}");
        if (optimizer == OptimizerKind.Sgd) Assert.True(weights <= 1e-5, $"weights differ by {weights:E2}");
        else Assert.True(normwise <= 1e-4, $"weights differ by {normwise:E2} (normwise)");
        Assert.Equal(rh.Evals.Select(e => Math.Round(e.ValidationLoss, 4)), rd.Evals.Select(e => Math.Round(e.ValidationLoss, 4)));
    }

    /// <summary>ZeRO-1 over 2 ranks with device state (collectives staged through the host) against 2 ranks on the host path (dropout masks are per rank).</summary>
    [Fact]
    public void Zero1_TwoRanksWithDeviceState_MatchTwoHostRanks()
    {
        var init = Init();
        float[][][] Ranks(bool device) => new InProcessWorld(2).Run(c =>
        {
            using var t = new Trainer(Options(device ? "device2" : "host2", device, OptimizerKind.Sgd) with { BatchSize = 3 }, LmData(), init, c);
            t.Run();
            return t.Store.Export();
        });
        var (host, device) = (Ranks(false), Ranks(true));
        double d = Diff.MaxRelative(host[0], device[0], floor: 1e-3);
        output.WriteLine($"ZeRO-1 2 ranks, device state vs host path: {d:E2}");
        Assert.True(d <= 1e-5, $"weights differ by {d:E2}");
        Assert.Equal(0, Diff.MaxRelative(device[0], device[1], floor: 1e-3));
    }

    [Theory]
    [InlineData(TrainingPrecision.Fp32)]
    [InlineData(TrainingPrecision.Fp16)]
    public void DeviceState_ResumesExactly_AndItsCheckpointsLoadOnTheHostPath(TrainingPrecision precision)
    {
        var init = Init();
        var o = Options("straight", true, accum: 2, steps: 8) with { Precision = precision, LossScaling = new LossScalerOptions { InitScale = Math.Pow(2, 22), GrowthInterval = 2 } };
        var (straight, rs, _) = Train(o, init);
        var split = o with { OutputDir = Path.Combine(_dir, "split") };
        Train(split with { StopAfter = 4 }, init);
        var (resumed, rr, _) = Train(split with { Resume = CheckpointRef.Latest }, init);
        for (int i = 0; i < init.Length; i++) Assert.Equal(straight[i], resumed[i]);
        Assert.Equal(rs.History.Skip(4).Select(m => (m.Loss, m.LossScale)), rr.History.Select(m => (m.Loss, m.LossScale)));
        if (precision == TrainingPrecision.Fp16) Assert.True(rs.SkippedSteps > 0, "no overflow was exercised");

        // The checkpoint is the host format: the host path resumes it, to the device path's numbers up to rounding.
        var checkpoint = Checkpoints.List(Path.Combine(split.OutputDir, "checkpoints"))[0];
        var (onHost, _, _) = Train(split with { OutputDir = Path.Combine(_dir, "host"), Resume = CheckpointRef.At(checkpoint), StateOnDevice = false }, init);
        double d = Diff.MaxRelative(straight, onHost, floor: 1e-3);
        output.WriteLine($"{precision}: device checkpoint resumed on the host path: {d:E2} from the device run");
        Assert.True(d <= 1e-3, $"{d:E2}");
    }

    /// <summary>Frozen parameters with device state: they never move, the others train as on the host path.</summary>
    [Fact]
    public void FrozenParameters_WithDeviceState_MatchTheHostPath()
    {
        var init = Init();
        string[] freeze = ["transformer.wte", "transformer.h.0"];
        var (host, _, _) = Train(Options("host", false, OptimizerKind.Sgd) with { Freeze = freeze }, init);
        var (device, _, _) = Train(Options("device", true, OptimizerKind.Sgd) with { Freeze = freeze }, init);
        var ps = ModelFolder.ReadParameters(Gpt2());
        var frozen = Freezing.Resolve(freeze, ps).ToHashSet();
        for (int i = 0; i < ps.Count; i++)
            if (frozen.Contains(ps[i].Name)) Assert.Equal(init[i], device[i]);
            else Assert.False(init[i].AsSpan().SequenceEqual(device[i]), $"{ps[i].Name} did not train");
        Assert.True(Diff.MaxRelative(host, device, floor: 1e-3) <= 1e-5);
    }

    /// <summary>
    /// On a GPU (a CUDA build on a machine with one; skipped elsewhere, so in CI): the whole device path against the host path
    /// on the CPU. This catches what the CPU cannot show: ONNX Runtime copies host inputs when they are bound, so the batch, the
    /// seed, the loss scale and the optimizer's scalars must be bound again before every run (a run that kept the first ones
    /// would not train, or would train on the first batch only).
    /// </summary>
    [SkippableTheory]
    [InlineData(TrainingPrecision.Fp32)]
    [InlineData(TrainingPrecision.Fp16)]
    public void OnAGpu_DeviceState_TrainsAsTheCpuDoes(TrainingPrecision precision)
    {
        try { ExecutionDevice.Cuda(0).EnsureAvailable(); }
        catch (DeviceUnavailableException e) { throw new SkipException("no CUDA here: " + e.Message); }
        var init = Init();
        var o = Options("cpu", false, OptimizerKind.AdamW, accum: 2) with { Precision = precision, LossScaling = new LossScalerOptions { InitScale = 1024 } };
        var (host, rh, _) = Train(o, init);
        var (gpu, rg, _) = Train(o with { OutputDir = Path.Combine(_dir, "gpu"), Session = new SessionSettings { Device = ExecutionDevice.Cuda(0) } }, init);
        Assert.Equal(rh.History.Select(m => m.LossScale), rg.History.Select(m => m.LossScale));
        double loss = rh.History.Zip(rg.History).Max(p => Math.Abs(p.First.Loss - p.Second.Loss) / p.First.Loss);
        double weights = Math.Sqrt(host.Zip(gpu).Sum(p => p.First.Zip(p.Second).Sum(x => Math.Pow(x.First - x.Second, 2))) / host.Sum(w => w.Sum(x => (double)x * x)));
        output.WriteLine($"{precision} GPU vs CPU: losses {loss:E2} (max relative), weights {weights:E2} (normwise)");
        Assert.True(loss <= (precision == TrainingPrecision.Fp16 ? 1e-2 : 1e-4), $"losses differ by {loss:E2}");
        Assert.True(weights <= (precision == TrainingPrecision.Fp16 ? 1e-2 : 1e-3), $"weights differ by {weights:E2}");
    }

    /// <summary>auto: device state for CUDA unless --ema (whose average is on the host); off on the CPU; an explicit value wins.</summary>
    [Fact]
    public void Auto_KeepsStateOnCudaWithoutEma_AndNeverOnTheCpu()
    {
        TrainerOptions O(ExecutionDevice d, bool? on, bool ema) => Options("auto", false) with
        {
            StateOnDevice = on, Session = new SessionSettings { Device = d }, Ema = ema ? new EmaOptions() : null,
        };
        Assert.True(O(ExecutionDevice.Cuda(1), null, ema: false).KeepsStateOnDevice);
        Assert.False(O(ExecutionDevice.Cuda(1), null, ema: true).KeepsStateOnDevice);
        Assert.False(O(ExecutionDevice.Cpu, null, ema: false).KeepsStateOnDevice);
        Assert.True(O(ExecutionDevice.Cpu, true, ema: false).KeepsStateOnDevice);
        Assert.False(O(ExecutionDevice.Cuda(0), false, ema: false).KeepsStateOnDevice);
        O(ExecutionDevice.Cuda(1), null, ema: true).Validate();                  // auto with --ema: host state, no refusal
    }

    [Fact]
    public void Ema_IsRefusedWithDeviceState()
    {
        var e = Assert.Throws<ArgumentException>(() => (Options("ema", true) with { Ema = new EmaOptions() }).Validate());
        Assert.Contains("leave out --state-on-device on", e.Message);
    }
}
