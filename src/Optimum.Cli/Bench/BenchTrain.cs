using Optimum.Data;
using Optimum.Core;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Training;
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
    public static int Run(BenchRun run, Gpt2Size size, string? torchRef, TextWriter output, bool optimizerGraph = false)
    {
        var report = new BenchReport(run.Json, output);
        double peak = MatMulPeak.Measure(run.Threads, report, run.Device);
        var cfg = size.Config(size.Seq);
        var dir = size.TrainFolder(run);
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        long parameters = ps.Sum(p => p.Count);
        using var store = new ParameterStore(ps);
        store.Load(ModelKinds.Initialize(ps, cfg, 0));
        using var session = new TrainingSession(dir, store, run.Session("ort-profile"));
        using var adam = Optimizer.Create(store, new OptimizerConfig { WeightDecay = 0.01, DecayAll = true });
        if (optimizerGraph) adam.UseGraph(run.Session());
        var rng = new Random(0);
        var ids = Enumerable.Range(0, size.Batch * size.Seq).Select(_ => (long)rng.Next(size.Vocab)).ToArray();
        var batch = new Batch
        {
            ["input_ids"] = new(ids, [size.Batch, size.Seq]), ["labels"] = new(ids, [size.Batch, size.Seq]),
            ["attention_mask"] = new(Enumerable.Repeat(1L, ids.Length).ToArray(), [size.Batch, size.Seq]),
        };
        float loss = 0;
        var t = StepTimes.Measure(run.Warmup, run.Steps, _ => loss = session.TrainStep(batch), i => adam.Step(i + 1, 3e-4));
        double tokens = (double)size.Batch * size.Seq;
        double flops = 6.0 * parameters * tokens + 12.0 * size.Layers * size.Seq * size.Width * tokens;
        double gflops = flops / t.Mean / 1e9;
        var r = new Dictionary<string, object>
        {
            ["engine"] = "optimum-net-ort", ["ort_version"] = OrtEnv.Instance().GetVersionString(),
            ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["seq"] = size.Seq, ["vocab"] = size.Vocab, ["batch"] = size.Batch,
            ["threads"] = run.Threads, ["device"] = run.Device.ToString(), ["parameters"] = parameters, ["optimizer"] = optimizerGraph ? "onnx-graph" : "fused-csharp",
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
        if (torchRef is not null) RunTorch(torchRef, run, size, gflops, rss, report);
        report.Print();
        return 0;
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
