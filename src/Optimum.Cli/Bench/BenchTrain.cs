using Optimum.Data;
using Optimum.Core;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Training;
using Optimum.Onnx.Lora;
using TrainingSession = Optimum.Training.TrainingSession;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench train</c>: training throughput of a GPT-2 through ONNX Runtime. A step is one
/// batch's forward + backward, then AdamW. Reports tokens/s, model FLOPs per step
/// (6·params·tokens + 12·layers·seq·width·tokens, as the TorchSharp reference counts them), achieved
/// GFLOP/s against <see cref="MatMulPeak"/> measured in the same run, the optimizer's share of the
/// step, and optionally ORT's profile by op type and the TorchSharp reference.
/// </summary>
public static class BenchTrain
{
    /// <summary>
    /// Measures <paramref name="size"/>'s GPT-2 on <paramref name="run"/>'s device at each precision (after LoRA of <paramref name="lora"/>
    /// when given), with the optimizer as an ONNX graph when <paramref name="optimizerGraph"/>, and the TorchSharp reference at
    /// <paramref name="torchRef"/> when given; writes the table or JSON lines to <paramref name="output"/>. Each of
    /// <paramref name="precisions"/> is measured in turn (fp32 by default): bf16/fp16 rebuild the graphs with autocast casts (fp16 also
    /// scales the loss). <paramref name="stateOnDevice"/> keeps parameters, gradients and AdamW state in the device's memory
    /// (<see cref="DeviceState"/>; the optimizer as a graph there).
    /// </summary>
    public static int Run(BenchRun run, Gpt2Size size, string? torchRef, TextWriter output, bool optimizerGraph = false, LoraConfig? lora = null,
        IReadOnlyList<TrainingPrecision>? precisions = null, bool stateOnDevice = false)
    {
        precisions ??= [TrainingPrecision.Fp32];
        if (precisions.Count == 0) throw new ArgumentException("--precision: give at least one of " + string.Join(", ", EnumNames.Names<TrainingPrecision>()) + ".");
        foreach (var p in precisions) p.CheckDevice(run.Device);
        var report = new BenchReport(run.Json, output);
        double peak = MatMulPeak.Measure(run.Threads, report, run.Device);
        var cfg = size.Config(size.Seq);
        var dir = size.TrainFolder(run);
        ModelKinds.Write(dir, cfg);
        double gflops = 0, rss = 0;
        // With LoRA, its model first and then full fine-tuning of the same base in the same run: the peak resident memory is
        // the process's, and full fine-tuning needs more, so each reading is that measurement's own peak.
        foreach (var precision in precisions)
        {
            var mode = new Mode(optimizerGraph, precision, stateOnDevice);
            if (lora is not null) Measure(run, size, dir, cfg, peak, report, mode, lora);
            var (g, m) = Measure(run, size, dir, cfg, peak, report, mode, null);
            if (precision == precisions[0]) (gflops, rss) = (g, m);
        }
        if (torchRef is not null) RunTorch(torchRef, run, size, gflops, rss, report);
        report.Print();
        return 0;
    }

    private readonly record struct Mode(bool OptimizerGraph, TrainingPrecision Precision, bool StateOnDevice);

    private static (double Gflops, double Rss) Measure(BenchRun run, Gpt2Size size, string dir, Gpt2Config cfg, double peak, BenchReport report, Mode mode, LoraConfig? lora)
    {
        var define = ModelKinds.For(cfg).Define(cfg)!;
        var ps = ModelFolder.ReadParameters(dir);
        long parameters = ps.Sum(p => p.Count);
        var weights = ModelKinds.Initialize(ps, cfg, 0);
        string modelDir = dir;
        long adapterParameters = 0;
        if (lora is not null)
        {
            // The LoRA model folder beside the base one; every base parameter frozen, A by PEFT's init, B zero.
            var l = LoraRun.Create(dir, dir + $"-lora-r{lora.R}-{string.Join("-", lora.TargetModules)}", ModelKinds.For(cfg), cfg, "gpt2", lora);
            define = l.Define;
            weights = l.InitialWeights(weights, 0);
            modelDir = l.ModelDir;
            ps = Freezing.Apply(ModelFolder.ReadParameters(modelDir), l.Frozen);
            adapterParameters = l.Modules.Sum(m => m.ParameterCount(lora.R));
        }
        using var store = new ParameterStore(ps);
        store.Load(weights);
        var settings = run.Session("ort-profile") with { Tf32 = mode.Precision == TrainingPrecision.Tf32 };
        var graphs = mode.Precision.IsMixed() ? TrainingGraphs.Build("gpt2", define, mode.Precision) : null;
        using var adam = Optimizer.Create(store, new OptimizerConfig { WeightDecay = 0.01, DecayAll = true });
        using var device = mode.StateOnDevice ? new DeviceState(store, adam, run.Session() with { Tf32 = settings.Tf32 }, accumulate: false) : null;
        if (mode.OptimizerGraph && device is null) adam.UseGraph(run.Session() with { Tf32 = settings.Tf32 });
        using var session = new TrainingSession(modelDir, store, settings, graphs, device);
        if (session.UsesLossScale) session.LossScale = 1024;
        var rng = new Random(0);
        var ids = Enumerable.Range(0, size.Batch * size.Seq).Select(_ => (long)rng.Next(size.Vocab)).ToArray();
        var batch = new Batch
        {
            ["input_ids"] = new(ids, [size.Batch, size.Seq]), ["labels"] = new(ids, [size.Batch, size.Seq]),
            ["attention_mask"] = new(Enumerable.Repeat(1L, ids.Length).ToArray(), [size.Batch, size.Seq]),
        };
        float loss = 0;
        var t = StepTimes.Measure(run.Warmup, run.Steps, _ => loss = session.TrainStep(batch), i =>
        {
            if (device is not null) device.Step(i + 1, 3e-4);
            else adam.Step(i + 1, 3e-4);
        });
        double tokens = (double)size.Batch * size.Seq;
        // Full training: 2 FLOPs per weight and token forward, 4 backward (input and weight gradients). With the base frozen
        // its weights need no gradient (2 + 2), the adapters all 6.
        double flops = (lora is null ? 6.0 * parameters : 4.0 * parameters + 6.0 * adapterParameters) * tokens
            + 12.0 * size.Layers * size.Seq * size.Width * tokens;
        double gflops = flops / t.Mean / 1e9;
        var r = new Dictionary<string, object>
        {
            ["engine"] = "optimum-net-ort", ["ort_version"] = OrtEnv.Instance().GetVersionString(),
            ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["seq"] = size.Seq, ["vocab"] = size.Vocab, ["batch"] = size.Batch,
            ["threads"] = run.Threads, ["device"] = run.Device.ToString(), ["optimizer"] = mode.OptimizerGraph || device is not null ? "onnx-graph" : "fused-csharp",
            ["precision"] = EnumNames.Name(mode.Precision), ["state"] = device is null ? "host" : $"device ({run.Device})",
            ["training"] = lora is null ? "full" : $"lora r {lora.R} alpha {lora.LoraAlpha} on {string.Join(",", lora.TargetModules)}",
            ["parameters"] = parameters + adapterParameters, ["trainable_parameters"] = store.Used,
            ["optimizer_state_mb"] = adam.StateBytes / 1e6,
        };
        t.AddTo(r);
        r["forward_backward_ms"] = t.PhaseMean(0) * 1000;
        r["optimizer_ms"] = t.PhaseMean(1) * 1000;
        r["optimizer_share"] = t.PhaseMean(1) / t.Mean;
        r["tokens_per_s"] = tokens / t.Mean;
        r["model_gflop_per_step"] = flops / 1e9;
        r["gflops_per_s"] = gflops;
        r["matmul_peak_gflops_per_s"] = peak;
        r["fraction_of_matmul_peak"] = gflops / peak;
        r["last_loss"] = loss;
        double rss = report.AddSpeed("train", r);
        if (run.Profile) OrtProfile.Report(report, run, session.EndProfiling(), run.Warmup + run.Steps, "step");
        return (gflops, rss);
    }

    /// <summary>The TorchSharp reference on the same model and options (see <see cref="ReferenceRun"/>).</summary>
    private static void RunTorch(string script, BenchRun run, Gpt2Size size, double ours, double oursRss, BenchReport report)
    {
        var (result, torchRss) = ReferenceRun.Run("TorchSharp", script, ["--layers", $"{size.Layers}", "--width", $"{size.Width}", "--heads", $"{size.Heads}",
            "--seq", $"{size.Seq}", "--vocab", $"{size.Vocab}", "--batch", $"{size.Batch}", "--threads", $"{run.Threads}", "--steps", $"{run.Steps}", "--warmup", $"{run.Warmup}"]);
        var torch = result.Number("gflops_per_s");
        report.Add("train", new Dictionary<string, object>
        {
            ["engine"] = "torchsharp-libtorch", ["step_ms"] = result.Number("step_ms"),
            ["tokens_per_s"] = result.Number("tokens_per_s"), ["gflops_per_s"] = torch, ["optimum_over_torch"] = ours / torch,
            ["peak_rss_mb"] = torchRss, ["optimum_rss_over_torch"] = torchRss > 0 ? oursRss / torchRss : double.NaN,
        });
        // The two peaks again side by side (one table, one JSON line each): the figure issue #15 compares.
        foreach (var (engine, mb) in new[] { ("optimum-net-ort", oursRss), ("torchsharp-libtorch", torchRss) })
            report.Add("train_memory", new Dictionary<string, object> { ["engine"] = engine, ["peak_rss_mb"] = mb, ["over_torch"] = torchRss > 0 ? mb / torchRss : double.NaN });
    }
}
