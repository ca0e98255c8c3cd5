using Optimum.Data;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Models;
using Optimum.Training;
using TrainingSession = Optimum.Training.TrainingSession;

namespace Optimum.Cli;

/// <summary>The benches' T5: by default 6+6 layers, d_model 384, 6 heads, batch 8, source 128 and target 64 tokens, T5's vocabulary.</summary>
public sealed record T5Size(int Layers = 6, int Width = 384, int Heads = 6, int Batch = 8, int Source = 128, int Target = 64, int Vocab = 32128);

/// <summary>
/// <c>optimum-net bench t5</c>: training throughput of a T5 against <see cref="MatMulPeak"/> measured in
/// the same run (a step is forward + backward + AdamW on one batch), and greedy generation tokens/s with
/// the encoder run once and the self-attention cache (a step is one generation of the target length).
/// </summary>
public static class BenchT5
{
    public static int Run(BenchRun run, T5Size size, string? torchRef, TextWriter output)
    {
        var report = new BenchReport(run.Json, output);
        double peak = MatMulPeak.Measure(run.Threads, report, run.Device);
        var cfg = new T5Config
        {
            VocabSize = size.Vocab, DModel = size.Width, DKv = size.Width / size.Heads, NumHeads = size.Heads, DFf = 4 * size.Width,
            NumLayers = size.Layers, NumDecoderLayers = size.Layers, FeedForwardProj = "relu", DropoutRate = 0, MaxLength = Math.Max(size.Source, size.Target) * 2,
        };
        var dir = Path.Combine(run.WorkDir, $"t5-{size.Layers}x{size.Width}-v{size.Vocab}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        using var store = new ParameterStore(ps);
        var weights = ModelKinds.Initialize(ps, cfg, 0);
        store.Load(weights);
        using var session = new TrainingSession(dir, store, run.Session("t5-profile"));
        using var adam = Optimizer.Create(store, new OptimizerConfig());
        var rng = new Random(0);
        long[] Tokens(int n) => Enumerable.Range(0, n).Select(_ => (long)rng.Next(3, size.Vocab)).ToArray();
        int b = size.Batch, src = size.Source, tgt = size.Target;
        var batch = new Batch
        {
            ["input_ids"] = new(Tokens(b * src), [b, src]), ["attention_mask"] = new(Enumerable.Repeat(1L, b * src).ToArray(), [b, src]),
            ["labels"] = new(Tokens(b * tgt), [b, tgt]),
        };
        var train = StepTimes.Measure(run.Warmup, run.Steps, _ => session.TrainStep(batch), i => adam.Step(i + 1, 1e-4));
        double trainRss = PeakMemory.TakeMegabytes();
        if (run.Profile) OrtProfile.Report(report, run, session.EndProfiling(), run.Warmup + run.Steps, "step");
        long emb = (long)size.Vocab * size.Width;
        long encoder = ps.Where(p => p.Name.StartsWith("encoder.", StringComparison.Ordinal)).Sum(p => p.Count);
        long decoder = ps.Where(p => p.Name.StartsWith("decoder.", StringComparison.Ordinal)).Sum(p => p.Count);
        double srcTokens = (double)b * src, tgtTokens = (double)b * tgt, inner = cfg.Inner;
        // 6·params·tokens per stack (decoder tokens also pay the tied LM head), plus attention scores: encoder self, decoder self, cross.
        double flops = 6.0 * (encoder * srcTokens + (decoder + emb) * tgtTokens)
            + 12.0 * size.Layers * inner * (src * srcTokens + tgt * tgtTokens + src * tgtTokens);
        double gflops = flops / train.Mean / 1e9;

        using var lm = new Seq2SeqLm(dir, weights, run.Session());
        var source = Enumerable.Range(0, src).Select(_ => rng.Next(3, size.Vocab)).ToArray();
        var greedy = new GenerationOptions { MaxNewTokens = tgt, EosTokenId = -1 };
        var generate = StepTimes.Measure(run.Warmup, run.Steps, _ => lm.Generate([source], greedy));

        var r = new Dictionary<string, object>
        {
            ["layers"] = size.Layers, ["d_model"] = size.Width, ["heads"] = size.Heads, ["vocab"] = size.Vocab, ["source"] = src, ["target"] = tgt,
            ["batch"] = b, ["threads"] = run.Threads, ["parameters"] = ps.Sum(p => p.Count),
        };
        train.AddTo(r);
        r["optimizer_ms"] = train.PhaseMean(1) * 1000;
        r["tokens_per_s"] = (srcTokens + tgtTokens) / train.Mean;
        r["model_gflop_per_step"] = flops / 1e9;
        r["gflops_per_s"] = gflops;
        r["matmul_peak_gflops_per_s"] = peak;
        r["fraction_of_matmul_peak"] = gflops / peak;
        generate.AddTo(r, "generation");
        r["generate_tokens_per_s"] = tgt / generate.Mean;
        r["train_peak_rss_mb"] = trainRss;
        r["peak_rss_mb"] = Math.Max(trainRss, PeakMemory.TakeMegabytes());
        report.Add("t5", r);
        if (torchRef is not null) RunTorch(torchRef, run, size, (double)r["tokens_per_s"], trainRss, report);
        report.Print();
        return 0;
    }

    /// <summary>
    /// The TorchSharp reference's T5 (run.sh --mode t5) trained on the same sizes, batch, threads and steps (see <see cref="ReferenceRun"/>);
    /// both peaks are of training: ours from the start of the process to the end of the training steps, its over its whole run.
    /// </summary>
    private static void RunTorch(string script, BenchRun run, T5Size size, double ours, double oursRss, BenchReport report)
    {
        var (result, torchRss) = ReferenceRun.Run("TorchSharp", script, ["--mode", "t5", "--layers", $"{size.Layers}", "--width", $"{size.Width}",
            "--heads", $"{size.Heads}", "--source", $"{size.Source}", "--target", $"{size.Target}", "--vocab", $"{size.Vocab}", "--batch", $"{size.Batch}",
            "--threads", $"{run.Threads}", "--steps", $"{run.Steps}", "--warmup", $"{run.Warmup}"]);
        double torch = result.Number("tokens_per_s");
        foreach (var (engine, tps, mb) in new[] { ("optimum-net-ort", ours, oursRss), ("torchsharp-libtorch", torch, torchRss) })
            report.Add("t5_vs_torch", new Dictionary<string, object>
            {
                ["engine"] = engine, ["train_tokens_per_s"] = tps, ["over_torch"] = tps / torch,
                ["train_peak_rss_mb"] = mb, ["rss_over_torch"] = torchRss > 0 ? mb / torchRss : double.NaN,
            });
    }
}
