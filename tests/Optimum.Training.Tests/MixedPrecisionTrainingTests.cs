using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Data;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Training.Tests;

/// <summary>
/// --precision in the trainer: fp16 graphs rebuilt from the definition with the builder's casts and a loss-scale input,
/// dynamic loss scaling (skipped overflowed steps, halved and grown scale) checkpointed for an exact resume, tf32 = fp32 on
/// the CPU, bf16 refused on the CPU. ONNX Runtime's CPU provider computes float16 products in float32
/// (AutocastTests.OnTheCpu_Float16Products_AreComputedInFloat32), though gradients cast down to float16 still saturate at 65504
/// (so scaled gradients overflow here as on a GPU): what is checked is the machinery, not float16 numerics.
/// </summary>
public sealed class MixedPrecisionTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly Gpt2Config Tiny = TinyLm.Config();

    private string Gpt2() => TinyLm.Folder(_dir, Tiny);

    private static LmData LmData() => TinyLm.Data();

    private float[][] Init() => ModelKinds.Initialize(ModelFolder.ReadParameters(Gpt2()), Tiny, 1);

    private TrainerOptions Options(string outDir, TrainingPrecision precision, long steps = 8, double initScale = 1024, int growth = 2000) => new()
    {
        ModelDir = Gpt2(), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 6, Lr = 5e-3, Warmup = 2, Schedule = ScheduleKind.Linear,
        ClipNorm = 1.0, EvalEvery = 0, EvalSamples = 12, SaveEvery = 0, Seed = 5, Export = false, Session = new SessionSettings { IntraOpThreads = 1 },
        Precision = precision, LossScaling = new LossScalerOptions { InitScale = initScale, GrowthInterval = growth },
    };

    private static (float[][] Weights, TrainResult Result, float? Scale, int? Tracker) Train(TrainerOptions o, float[][] init)
    {
        using var t = new Trainer(o, LmData(), init);
        var r = t.Run();
        return (t.Store.Export(), r, t.LossScaler?.Scale, t.LossScaler?.GrowthTracker);
    }

    [Fact]
    public void Fp16_TracksFp32_WithTheLossScaleInTheMetrics()
    {
        var init = Init();
        var (fp32, r32, _, _) = Train(Options("fp32", TrainingPrecision.Fp32), init);
        var (fp16, r16, scale, _) = Train(Options("fp16", TrainingPrecision.Fp16), init);
        // AdamW moves a weight at most about lr per step (0.04 in 8 steps); tiny gradient differences can flip where it moves
        // the near-zero-gradient ones, so weights are compared absolutely against that, and the losses relatively.
        double diff = fp32.Zip(fp16).Max(p => p.First.Zip(p.Second).Max(x => Math.Abs(x.First - x.Second)));
        double loss = r32.History.Zip(r16.History).Max(p => Math.Abs(p.First.Loss - p.Second.Loss) / p.First.Loss);
        output.WriteLine($"fp16 vs fp32 after 8 steps: max weight difference {diff:E2}, max relative loss difference {loss:E2}");
        Assert.True(diff < 1e-3, $"fp16 weights differ from fp32's by {diff:E2}");
        Assert.True(loss < 1e-4, $"fp16 losses differ from fp32's by {loss:E2} (relative)");
        Assert.False(fp32.Zip(init).All(p => p.First.SequenceEqual(p.Second)));       // the runs did train
        Assert.All(r16.History, m => Assert.Equal(1024.0, m.LossScale));
        Assert.All(r32.History, m => Assert.Null(m.LossScale));
        Assert.Equal(1024f, scale);
        Assert.Equal(0, r16.SkippedSteps);
        var lines = File.ReadLines(Path.Combine(_dir, "fp16", "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).Where(n => n["loss"] is not null).ToArray();
        Assert.All(lines, n => Assert.Equal(1024.0, (double)n["loss_scale"]!));
        Assert.DoesNotContain("loss_scale", File.ReadAllText(Path.Combine(_dir, "fp32", "metrics.jsonl")));
    }

    /// <summary>
    /// A scale of 2^Top overflows float32 here (so float16 too): the first steps are skipped, the scale halving each time and
    /// the weights untouched, until a finite step; the loss stays finite throughout (only the scaled gradients overflow).
    /// </summary>
    /// <summary>A loss scale whose first steps overflow float32 (2^Top times this model's gradients), the next ones not.</summary>
    private const int Top = 23;

    [Fact]
    public void Fp16_OverflowedSteps_AreSkipped_HalvingTheScale_WithoutMovingTheWeights()
    {
        var init = Init();
        var o = Options("overflow", TrainingPrecision.Fp16, steps: 12, initScale: Math.Pow(2, Top));
        var (_, r, scale, _) = Train(o, init);
        int k = r.History.TakeWhile(m => m.Skipped).Count();
        output.WriteLine($"skipped {k} steps; scales {string.Join(", ", r.History.Select(m => m.LossScale))}");
        Assert.InRange(k, 1, 9);
        Assert.All(r.History.Skip(k), m => Assert.False(m.Skipped));
        for (int i = 0; i < r.History.Count; i++)
            Assert.Equal(Math.Pow(2, Top - Math.Min(i, k)), r.History[i].LossScale);
        Assert.Equal((float)Math.Pow(2, Top - k), scale);
        Assert.Equal(k, r.SkippedSteps);
        Assert.All(r.History.Take(k), m => Assert.True(double.IsFinite(m.Loss)));            // the loss is finite: only the gradients overflowed

        // Stopped right after the skipped steps: the checkpoint holds the initial weights.
        var (stopped, _, _, _) = Train(o with { OutputDir = Path.Combine(_dir, "overflow-stop"), StopAfter = k }, init);
        for (int i = 0; i < init.Length; i++) Assert.Equal(init[i], stopped[i]);
    }

    [Fact]
    public void Fp16_ResumesExactly_WithTheLossScalersState()
    {
        var init = Init();
        // Skipped steps first (2^Top), then the scale grows every 2 good steps: the state changes across the split.
        var o = Options("straight", TrainingPrecision.Fp16, steps: 12, initScale: Math.Pow(2, Top), growth: 2);
        var (straight, rs, scale, tracker) = Train(o, init);
        var split = o with { OutputDir = Path.Combine(_dir, "split") };
        Train(split with { StopAfter = 6 }, init);
        var checkpoint = Checkpoints.Latest(Path.Combine(split.OutputDir, "checkpoints"))!;
        Assert.True(File.Exists(Path.Combine(checkpoint, LossScaler.FileName)));
        Assert.Equal("fp16", Checkpoints.ReadState(checkpoint).Precision);
        var (resumed, rr, scale2, tracker2) = Train(split with { Resume = CheckpointRef.Latest }, init);
        for (int i = 0; i < init.Length; i++) Assert.Equal(straight[i], resumed[i]);
        Assert.Equal((scale, tracker), (scale2, tracker2));
        Assert.Equal(rs.History.Skip(6).Select(m => (m.LossScale, m.Skipped, m.Loss)), rr.History.Select(m => (m.LossScale, m.Skipped, m.Loss)));
        Assert.Equal(rs.SkippedSteps, rr.SkippedSteps);
        Assert.Contains(rs.History, m => m.LossScale > rs.History.Where(x => !x.Skipped).Min(x => x.LossScale));   // the scale grew

        // Another precision cannot continue it, and an fp16 resume needs the scaler's file.
        var other = Assert.Throws<InvalidDataException>(() => Train(split with { Resume = CheckpointRef.At(checkpoint), Precision = TrainingPrecision.Fp32 }, init));
        Assert.Contains("precision fp16", other.Message);
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, Checkpoints.StateFile)))!;
        state["files"]!.AsObject().Remove(LossScaler.FileName);
        File.WriteAllText(Path.Combine(checkpoint, Checkpoints.StateFile), state.ToJsonString());
        var missing = Assert.Throws<InvalidDataException>(() => Train(split with { Resume = CheckpointRef.At(checkpoint) }, init));
        Assert.Contains(LossScaler.FileName, missing.Message);
    }

    [Fact]
    public void Tf32_OnTheCpu_IsFp32Exactly_ResumesFp32Checkpoints_AndBf16IsRefusedOnTheCpu()
    {
        var init = Init();
        var (fp32, _, _, _) = Train(Options("a", TrainingPrecision.Fp32, steps: 3), init);
        var (tf32, _, _, _) = Train(Options("b", TrainingPrecision.Tf32, steps: 3), init);
        for (int i = 0; i < init.Length; i++) Assert.Equal(fp32[i], tf32[i]);
        // fp32 and tf32 keep the same state: a tf32 run continues an fp32 checkpoint (here to the same numbers).
        Train(Options("c32", TrainingPrecision.Fp32, steps: 3) with { StopAfter = 2 }, init);
        var (continued, _, _, _) = Train(Options("c32", TrainingPrecision.Tf32, steps: 3) with { Resume = CheckpointRef.Latest }, init);
        for (int i = 0; i < init.Length; i++) Assert.Equal(fp32[i], continued[i]);
        // A precision's --loss-scale is only read (and checked) by fp16.
        (Options("d", TrainingPrecision.Fp32) with { LossScaling = new LossScalerOptions { InitScale = 0 } }).Validate();
        Assert.Contains("--loss-scale must be a positive number", Assert.Throws<ArgumentException>(() => (Options("d", TrainingPrecision.Fp16) with { LossScaling = new LossScalerOptions { InitScale = 0 } }).Validate()).Message);
        var e = Assert.Throws<ArgumentException>(() => Options("c", TrainingPrecision.Bf16).Validate());
        Assert.Contains("--precision bf16 needs --device cuda", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "c")));
    }

    /// <summary>The fp16 graphs are the definition's with casts: every MatMul/Gemm computes in float16, the parameters are the folder's.</summary>
    [Fact]
    public void Fp16Graphs_HaveFloat16Products_AndTheFoldersParameters()
    {
        var hf = ModelFolder.ReadConfig(Gpt2());
        var kind = ModelKinds.For(hf);
        var graphs = TrainingGraphs.Build("gpt2", kind.Define(kind.ReadConfig(hf))!, TrainingPrecision.Fp16);
        graphs.CheckParameters(ModelFolder.ReadParameters(Gpt2()), Gpt2());
        Assert.Contains(GraphInputs.LossScale, graphs.TrainInputs);
        Assert.DoesNotContain(GraphInputs.LossScale, graphs.EvalInputs);
        var model = Optimum.Onnx.Proto.ModelProto.Parser.ParseFrom(graphs.Training);
        var products = model.Graph.Node.Where(n => n.OpType is "MatMul" or "Gemm").ToArray();
        Assert.NotEmpty(products);
        var types = model.Graph.ValueInfo.ToDictionary(v => v.Name, v => v.Type.TensorType.ElemType);
        Assert.All(products, n => Assert.Equal((int)Optimum.Onnx.DType.Float16, types[n.Output[0]]));
        Assert.Throws<ArgumentException>(() => TrainingGraphs.Build("gpt2", kind.Define(kind.ReadConfig(hf))!, TrainingPrecision.Tf32));
    }
}
