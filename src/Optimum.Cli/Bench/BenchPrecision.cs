using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Inference.Quantization;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench generate --precision fp32,int8,int4</c>: the same bench GPT-2 (same initial weights) as float32 and
/// as quantized folders made by <see cref="ModelQuantizer"/>, each loaded from its folder as a server would, then batch-1
/// greedy generation with the KV cache, each in its own process: tokens/s, time to first token, the folder's bytes, peak RSS
/// (loading is the peak: the graph with its weights is parsed and serialized once more for ONNX Runtime) and the resident set
/// after generating, and each precision's speed over float32's in the same run.
/// </summary>
public static class BenchPrecision
{
    /// <summary>The precisions the bench knows: int8 is DynamicQuantizeMatMul (the quantizer's default), int8-nbits MatMulNBits with bits 8.</summary>
    public static readonly string[] Names = ["fp32", "int8", "int8-nbits", "int4"];

    public static IReadOnlyList<string> Parse(string list)
    {
        var ps = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => p.ToLowerInvariant()).Distinct().ToArray();
        if (ps.Length == 0) throw new ArgumentException("--precision: give at least one of " + string.Join(", ", Names) + ".");
        foreach (var p in ps)
            if (!Names.Contains(p)) throw new ArgumentException($"--precision: '{p}' is not one of {string.Join(", ", Names)}.");
        return ps;
    }

    private static QuantizeOptions? Options(string precision, int blockSize) => precision switch
    {
        "fp32" => null,
        "int8" => new() { Weights = WeightPrecision.Int8, Int8Operator = Int8Operator.DynamicQuantizeMatMul },
        "int8-nbits" => new() { Weights = WeightPrecision.Int8, Int8Operator = Int8Operator.MatMulNBits, BlockSize = blockSize },
        "int4" => new() { Weights = WeightPrecision.Int4, BlockSize = blockSize },
        _ => throw new ArgumentException($"--precision: '{precision}' is not one of {string.Join(", ", Names)}."),
    };

    public static int Run(BenchRun run, Gpt2Size size, int prompt, int newTokens, IReadOnlyList<string> precisions, int blockSize, TextWriter output)
    {
        BlockQuantizer.CheckBlockSize(blockSize);
        var report = new BenchReport(run.Json, output);
        var cfg = size.Config(prompt + newTokens);
        var root = Path.Combine(run.WorkDir, $"gpt2-prec-{size.Layers}x{size.Width}-v{size.Vocab}-p{cfg.NPositions}");
        var f32 = Path.Combine(root, "fp32");
        ModelKinds.Write(f32, cfg);
        var dirs = new Dictionary<string, string>();
        {
            var ps = ModelFolder.ReadParameters(f32);
            var weights = ModelKinds.Initialize(ps, cfg, 0);
            HfWeights.Save(Path.Combine(f32, ModelFolder.WeightsFile), ps, weights);
            foreach (var p in precisions)
            {
                if (Options(p, blockSize) is not { } o) { dirs[p] = f32; continue; }
                dirs[p] = Path.Combine(root, p);
                ModelQuantizer.Quantize(f32, weights, dirs[p], o with { Overwrite = true });   // the bench's own folder, made again each run
            }
        }
        double? baseline = null;
        foreach (var p in precisions)
        {
            // One process per precision: ORT's shared arena and the managed heap keep what a previous model used, so only a
            // fresh process's peak RSS is that precision's own.
            var (m, peak) = ReferenceRun.RunSelf($"bench generate --precision {p}", ["bench", "generate", "--precision", p, "--precision-folder", dirs[p],
                "--threads", $"{run.Threads}", "--warmup", $"{run.Warmup}", "--steps", $"{run.Steps}", "--prompt", $"{prompt}", "--new-tokens", $"{newTokens}", "--vocab", $"{size.Vocab}", "--device", $"{run.Device}", "--json"]);
            double tps = m.Number("tokens_per_s");
            baseline ??= p == "fp32" ? tps : null;
            var r = new Dictionary<string, object>
            {
                ["precision"] = p, ["scheme"] = Options(p, blockSize)?.Describe() ?? "float32",
                ["layers"] = size.Layers, ["width"] = size.Width, ["vocab"] = size.Vocab, ["threads"] = run.Threads,
                ["prompt_tokens"] = prompt, ["new_tokens"] = newTokens,
                ["tokens_per_s"] = tps,
                ["time_to_first_token_ms"] = m.Number("time_to_first_token_ms"),
                ["model_mb"] = ModelBytes(dirs[p]) / 1e6,
            };
            if (baseline is { } b) r["speedup_vs_fp32"] = tps / b;
            r["rss_after_generation_mb"] = m.Number("rss_mb");
            r["peak_rss_mb"] = peak;
            report.Add("generate_precision", r);
        }
        report.Print();
        return 0;
    }

    /// <summary>
    /// The child of <see cref="Run"/>: loads <paramref name="dir"/> as a server would, generates, and prints one JSON line
    /// (tokens/s, time to first token, resident MB after generating).
    /// </summary>
    public static int Worker(BenchRun run, string dir, int vocab, int prompt, int newTokens, TextWriter output)
    {
        var report = new BenchReport(true, output);
        var rng = new Random(0);
        var ids = Enumerable.Range(0, prompt).Select(_ => rng.Next(vocab)).ToArray();
        var greedy = new GenerationOptions { MaxNewTokens = newTokens, EosTokenId = -1 };
        using var lm = new CausalLm(dir, settings: run.Session());
        var firstToken = new double[run.Warmup + run.Steps];
        var times = StepTimes.Measure(run.Warmup, run.Steps, i =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            Generator.Generate(lm, [ids], greedy, (_, t) => { if (t.Count == 1) firstToken[i] = clock.Elapsed.TotalSeconds; return true; });
        });
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        report.Add("generate_precision_worker", new Dictionary<string, object>
        {
            ["tokens_per_s"] = newTokens / times.Mean,
            ["time_to_first_token_ms"] = StepTimes.Quantile(firstToken.Skip(run.Warmup), 0.5) * 1000,
            ["rss_mb"] = self.WorkingSet64 / 1e6,
        });
        report.Print();
        return 0;
    }

    /// <summary>How to start this program again: the apphost, or dotnet with the entry assembly.</summary>
    /// <summary>What loading the folder reads: its inference graph (with any quantized weights) and model.safetensors.</summary>
    public static long ModelBytes(string dir) =>
        new[] { ModelFolder.InferenceFile, ModelFolder.WeightsFile }.Select(f => Path.Combine(dir, f)).Where(File.Exists).Sum(f => new FileInfo(f).Length);
}
