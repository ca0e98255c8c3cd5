using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Training;
using TrainingSession = Optimum.Training.TrainingSession;
using Microsoft.Extensions.DependencyInjection;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Cli;

/// <summary>Options of <c>optimum-net bench train</c>.</summary>
public sealed record BenchOptions(int Layers = 6, int Width = 384, int Heads = 6, int Seq = 256, int Vocab = 50257, int Batch = 8,
    int Threads = 2, int Steps = 5, int Warmup = 2, bool Json = false, bool Profile = false, string? TorchRef = null, string WorkDir = "out/bench");

/// <summary>
/// Training throughput of a GPT-2 through ONNX Runtime: tokens/s, model FLOPs per step
/// (6·params·tokens + 12·layers·seq·width·tokens, as the TorchSharp reference counts them), achieved
/// GFLOP/s against the peak of ORT's own MatMul measured in the same run, the optimizer's share of
/// the step, and optionally ORT's profile by op type and the TorchSharp reference.
/// </summary>
public static class BenchCommand
{
    public static int Run(BenchOptions o, TextWriter output)
    {
        var results = new List<Dictionary<string, object>>();
        void Emit(Dictionary<string, object> r)
        {
            results.Add(r);
            if (o.Json) output.WriteLine(JsonSerializer.Serialize(r));
        }
        var peak = MatMulPeak(o.Threads, Emit);
        var cfg = new Gpt2Config
        {
            VocabSize = o.Vocab, NPositions = o.Seq, NEmbd = o.Width, NLayer = o.Layers, NHead = o.Heads, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
        };
        var dir = Path.Combine(o.WorkDir, $"gpt2-{o.Layers}x{o.Width}-v{o.Vocab}-s{o.Seq}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        long parameters = ps.Sum(p => p.Count);
        using var store = new ParameterStore(ps);
        store.Load(ModelKinds.Initialize(ps, cfg, 0));
        var settings = new SessionSettings { IntraOpThreads = o.Threads, ProfilePrefix = o.Profile ? Path.Combine(o.WorkDir, "ort-profile") : null };
        using var session = new TrainingSession(dir, store, settings);
        using var adam = Optimizer.Create(store, new OptimizerConfig { WeightDecay = 0.01, DecayAll = true });
        var rng = new Random(0);
        var ids = Enumerable.Range(0, o.Batch * o.Seq).Select(_ => (long)rng.Next(o.Vocab)).ToArray();
        var batch = new Batch
        {
            ["input_ids"] = new(ids, [o.Batch, o.Seq]), ["labels"] = new(ids, [o.Batch, o.Seq]),
            ["attention_mask"] = new(Enumerable.Repeat(1L, ids.Length).ToArray(), [o.Batch, o.Seq]),
        };
        double fwdBwd = 0, opt = 0, loss = 0;
        for (int s = 0; s < o.Warmup + o.Steps; s++)
        {
            var t0 = Stopwatch.GetTimestamp();
            loss = session.TrainStep(batch);
            var t1 = Stopwatch.GetTimestamp();
            adam.Step(s + 1, 3e-4);
            var t2 = Stopwatch.GetTimestamp();
            if (s < o.Warmup) continue;
            fwdBwd += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
            opt += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
        }
        double step = (fwdBwd + opt) / o.Steps, tokens = (double)o.Batch * o.Seq;
        double flops = 6.0 * parameters * tokens + 12.0 * o.Layers * o.Seq * o.Width * tokens;
        double gflops = flops / step / 1e9;
        var train = new Dictionary<string, object>
        {
            ["bench"] = "train", ["engine"] = "optimum-net-ort", ["ort_version"] = OrtEnv.Instance().GetVersionString(),
            ["layers"] = o.Layers, ["width"] = o.Width, ["heads"] = o.Heads, ["seq"] = o.Seq, ["vocab"] = o.Vocab, ["batch"] = o.Batch, ["threads"] = o.Threads,
            ["parameters"] = parameters, ["step_ms"] = step * 1000, ["forward_backward_ms"] = fwdBwd / o.Steps * 1000, ["optimizer_ms"] = opt / o.Steps * 1000,
            ["optimizer_share"] = opt / (fwdBwd + opt), ["tokens_per_s"] = tokens / step, ["model_gflop_per_step"] = flops / 1e9,
            ["gflops_per_s"] = gflops, ["matmul_peak_gflops_per_s"] = peak, ["fraction_of_matmul_peak"] = gflops / peak, ["last_loss"] = loss,
        };
        Emit(train);
        if (o.Profile)
        {
            var files = session.EndProfiling();
            foreach (var (op, ms, share) in ProfileByOp(files[0], o.Warmup + o.Steps))
                Emit(new Dictionary<string, object> { ["bench"] = "profile", ["op_type"] = op, ["ms_per_step"] = ms, ["share"] = share });
        }
        if (o.TorchRef is { } torch) RunTorch(torch, o, gflops, Emit);
        if (!o.Json) PrintTable(results, output);
        return 0;
    }

    /// <summary>The best GFLOP/s of ORT's MatMul over a few large shapes, with the same thread count.</summary>
    private static double MatMulPeak(int threads, Action<Dictionary<string, object>> emit)
    {
        double best = 0;
        foreach (var (m, k, n) in new[] { (2048, 2048, 2048), (2048, 384, 1536), (2048, 1536, 384) })
        {
            var g = new GraphBuilder("matmul");
            var a = g.Input("a", DType.Float, Shape.Of(m, k));
            var b = g.Input("b", DType.Float, Shape.Of(k, n));
            g.Output(g.MatMul(a, b), "c");
            using var options = new SessionSettings { IntraOpThreads = threads }.CreateOptions();
            using var s = new InferenceSession(ModelWriter.ToBytes(g), options);
            var rng = new Random(1);
            var av = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble()).ToArray();
            var bv = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextDouble()).ToArray();
            var cv = new float[m * n];
            using var A = OrtValue.CreateTensorValueFromMemory(av, [m, k]);
            using var B = OrtValue.CreateTensorValueFromMemory(bv, [k, n]);
            using var C = OrtValue.CreateTensorValueFromMemory(cv, [m, n]);
            using var binding = s.CreateIoBinding();
            binding.BindInput("a", A);
            binding.BindInput("b", B);
            binding.BindOutput("c", C);
            using var run = new RunOptions();
            for (int i = 0; i < 2; i++) s.RunWithBinding(run, binding);
            int reps = 5;
            var t = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) s.RunWithBinding(run, binding);
            double gf = 2.0 * m * k * n * reps / t.Elapsed.TotalSeconds / 1e9;
            emit(new Dictionary<string, object> { ["bench"] = "matmul", ["m"] = m, ["k"] = k, ["n"] = n, ["threads"] = threads, ["gflops_per_s"] = gf });
            best = Math.Max(best, gf);
        }
        return best;
    }

    /// <summary>Milliseconds per step and share by op type from an ORT profile (kernel time of graph nodes).</summary>
    public static IEnumerable<(string Op, double MsPerStep, double Share)> ProfileByOp(string path, int runs)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var byOp = new Dictionary<string, double>();
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            if (!e.TryGetProperty("cat", out var cat) || cat.GetString() != "Node") continue;
            if (!e.TryGetProperty("name", out var name) || !name.GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
            var op = e.GetProperty("args").TryGetProperty("op_name", out var o) ? o.GetString()! : "?";
            byOp[op] = byOp.GetValueOrDefault(op) + e.GetProperty("dur").GetDouble();
        }
        double total = byOp.Values.Sum();
        return byOp.OrderByDescending(kv => kv.Value).Take(20).Select(kv => (kv.Key, kv.Value / 1000 / runs, kv.Value / total)).ToArray();
    }

    private static void RunTorch(string script, BenchOptions o, double ours, Action<Dictionary<string, object>> emit)
    {
        if (!File.Exists(script)) throw new FileNotFoundException($"TorchSharp reference '{script}' does not exist.", script);
        var psi = new ProcessStartInfo("bash", [script, "--layers", $"{o.Layers}", "--width", $"{o.Width}", "--heads", $"{o.Heads}", "--seq", $"{o.Seq}",
            "--vocab", $"{o.Vocab}", "--batch", $"{o.Batch}", "--threads", $"{o.Threads}", "--steps", $"{o.Steps}", "--warmup", $"{o.Warmup}"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        var line = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'))
            ?? throw new InvalidDataException($"The TorchSharp reference printed no result (exit {p.ExitCode}).");
        using var doc = JsonDocument.Parse(line);
        var torch = doc.RootElement.GetProperty("gflops_per_s").GetDouble();
        emit(new Dictionary<string, object>
        {
            ["bench"] = "train", ["engine"] = "torchsharp-libtorch", ["step_ms"] = doc.RootElement.GetProperty("step_ms").GetDouble(),
            ["tokens_per_s"] = doc.RootElement.GetProperty("tokens_per_s").GetDouble(), ["gflops_per_s"] = torch, ["optimum_over_torch"] = ours / torch,
        });
    }

    private static void PrintTable(List<Dictionary<string, object>> results, TextWriter w)
    {
        foreach (var r in results)
        {
            string F(string k, string fmt = "F1") => r.TryGetValue(k, out var v) ? Convert.ToDouble(v).ToString(fmt) : "";
            switch (r["bench"])
            {
                case "matmul": w.WriteLine($"ORT MatMul {r["m"]}x{r["k"]}x{r["n"]} ({r["threads"]} threads): {F("gflops_per_s")} GFLOP/s"); break;
                case "train" when (string)r["engine"] == "optimum-net-ort":
                    w.WriteLine($"GPT-2 {r["layers"]}L/{r["width"]}/{r["heads"]}H seq {r["seq"]} vocab {r["vocab"]} batch {r["batch"]}, {r["parameters"]:N0} params, {r["threads"]} threads");
                    w.WriteLine($"  step {F("step_ms")} ms (forward+backward {F("forward_backward_ms")} ms, optimizer {F("optimizer_ms")} ms = {F("optimizer_share", "P1")})");
                    w.WriteLine($"  {F("tokens_per_s", "N0")} tokens/s, {F("model_gflop_per_step")} GFLOP/step, {F("gflops_per_s")} GFLOP/s = {F("fraction_of_matmul_peak", "P1")} of the MatMul peak {F("matmul_peak_gflops_per_s")}");
                    break;
                case "train": w.WriteLine($"TorchSharp (libtorch): step {F("step_ms")} ms, {F("gflops_per_s")} GFLOP/s; Optimum.Net / TorchSharp = {F("optimum_over_torch", "F2")}x"); break;
                case "profile": w.WriteLine($"  {r["op_type"],-28} {F("ms_per_step"),9} ms/step {F("share", "P1"),7}"); break;
            }
        }
    }
}

/// <summary>
/// <c>optimum-net bench zero</c>: ZeRO-1 step time at N = 1 and N = 2 ranks (each run under mpirun
/// when it is installed, else in-process threads), the share of the step spent in collectives, and
/// the optimizer-state bytes per rank, for the benchmark GPT-2 with a fixed global batch.
/// </summary>
public static class BenchZero
{
    public static int Run(BenchOptions o, bool worker, TextWriter output)
    {
        if (worker)
        {
            using var mpi = Optimum.Distributed.MpiCommunicator.LaunchedByMpirun ? new Optimum.Distributed.MpiCommunicator() : null;
            var r = Measure(o, mpi ?? (Optimum.Distributed.ICommunicator)new Optimum.Distributed.SingleProcess());
            if (r is not null) output.WriteLine(JsonSerializer.Serialize(r));
            return 0;
        }
        var mpirun = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);
        var results = new List<Dictionary<string, JsonElement>>();
        foreach (var n in new[] { 1, 2 })
        {
            string line;
            if (mpirun is not null)
            {
                var self = Path.Combine(AppContext.BaseDirectory, "optimum-net.dll");
                var psi = new ProcessStartInfo(mpirun, $"--allow-run-as-root --oversubscribe --bind-to none -np {n} dotnet {self} bench zero --worker --steps {o.Steps} --layers {o.Layers} --width {o.Width} --heads {o.Heads} --seq {o.Seq} --vocab {o.Vocab} --batch {o.Batch} --threads {o.Threads}")
                { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
                psi.Environment["TERM"] = "dumb";
                using var p = Process.Start(psi)!;
                p.StandardInput.Close();
                var text = p.StandardOutput.ReadToEnd();
                var err = p.StandardError.ReadToEnd();
                p.WaitForExit();
                line = text.Split('\n').LastOrDefault(l => l.StartsWith('{')) ?? throw new InvalidOperationException($"bench zero at N={n} printed no result (exit {p.ExitCode}): {err}");
            }
            else
            {
                var world = new Optimum.Distributed.InProcessWorld(n);
                line = JsonSerializer.Serialize(world.Run(c => Measure(o with { Threads = Math.Max(1, o.Threads / n) }, c))[0]);
            }
            var r = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(line)!;
            results.Add(r);
            if (o.Json) output.WriteLine(line);
            else output.WriteLine($"ZeRO-1 N={r["ranks"]} ({r["backend"]}): step {r["step_ms"].GetDouble():F0} ms, communication {r["comm_share"].GetDouble():P1} ({r["comm_ms"].GetDouble():F0} ms), " +
                $"{r["tokens_per_s"].GetDouble():N0} tokens/s, optimizer state {r["optimizer_state_bytes_per_rank"].GetInt64() / 1e6:F1} MB per rank (P = {r["parameters"].GetInt64():N0})");
        }
        return 0;
    }

    private static Dictionary<string, object>? Measure(BenchOptions o, Optimum.Distributed.ICommunicator comm)
    {
        var cfg = new Gpt2Config { VocabSize = o.Vocab, NPositions = o.Seq, NEmbd = o.Width, NLayer = o.Layers, NHead = o.Heads, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 };
        var dir = Path.Combine(o.WorkDir, $"gpt2-{o.Layers}x{o.Width}-v{o.Vocab}-s{o.Seq}");
        if (comm.Rank == 0) ModelKinds.Write(dir, cfg);
        comm.Barrier();
        var ps = ModelFolder.ReadParameters(dir);
        var rng = new Random(0);
        var tokens = Enumerable.Range(0, o.Seq * o.Batch * (o.Steps + 2) * 2).Select(_ => rng.Next(o.Vocab)).ToArray();
        var options = new TrainerOptions
        {
            ModelDir = dir, OutputDir = Path.Combine(o.WorkDir, $"zero-{comm.Size}"), Steps = o.Steps + 2, BatchSize = o.Batch / comm.Size, Lr = 3e-4, Warmup = 0,
            Schedule = "constant", ClipNorm = 1, EvalEvery = 0, EvalAtStart = false, EvalSamples = 1, SaveEvery = 0, Export = false,
            Session = new SessionSettings { IntraOpThreads = Math.Max(1, o.Threads / comm.Size) },
        };
        using var t = new Trainer(options, new Optimum.Data.LmData(tokens, o.Seq, 0.01), ModelKinds.Initialize(ps, cfg, 0), comm);
        var r = t.Run();
        var measured = r.History.Skip(2).ToArray();            // ORT plans and allocates its memory during the first two runs
        if (comm.Rank != 0) return null;
        double step = measured.Average(m => m.StepSeconds), commS = measured.Average(m => m.CommSeconds);
        return new Dictionary<string, object>
        {
            ["bench"] = "zero1", ["ranks"] = comm.Size, ["backend"] = comm.Backend, ["threads_per_rank"] = options.Session.IntraOpThreads,
            ["global_batch"] = o.Batch, ["seq"] = o.Seq, ["parameters"] = ps.Sum(p => p.Count), ["step_ms"] = step * 1000, ["comm_ms"] = commS * 1000,
            ["comm_share"] = commS / step, ["optimizer_ms"] = measured.Average(m => m.OptimizerSeconds) * 1000,
            ["tokens_per_s"] = o.Batch * o.Seq / step, ["optimizer_state_bytes_per_rank"] = t.Optimizer.StateBytes,
        };
    }
}

/// <summary>
/// <c>optimum-net bench generate</c>: batch-1 greedy generation of N new tokens after a P-token prompt on
/// the benchmark GPT-2, with the KV cache and without it (the whole sequence re-run each step), and
/// the time to first token.
/// </summary>
public static class BenchGenerate
{
    public static int Run(BenchOptions o, int prompt, int newTokens, TextWriter output)
    {
        var cfg = new Gpt2Config { VocabSize = o.Vocab, NPositions = Math.Max(o.Seq, prompt + newTokens), NEmbd = o.Width, NLayer = o.Layers, NHead = o.Heads, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 };
        var dir = Path.Combine(o.WorkDir, $"gpt2-gen-{o.Layers}x{o.Width}-v{o.Vocab}-p{cfg.NPositions}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        using var lm = new Optimum.Inference.CausalLm(dir, ModelKinds.Initialize(ps, cfg, 0), new SessionSettings { IntraOpThreads = o.Threads, ProfilePrefix = o.Profile ? Path.Combine(o.WorkDir, "gen-profile") : null });
        var rng = new Random(0);
        var ids = Enumerable.Range(0, prompt).Select(_ => rng.Next(o.Vocab)).ToArray();
        var greedy = new Optimum.Inference.GenerationOptions { MaxNewTokens = newTokens };
        Optimum.Inference.Generator.Generate(lm, [ids], greedy with { MaxNewTokens = 8 });   // warm-up
        double ttft = 0;
        var sw = Stopwatch.StartNew();
        Optimum.Inference.Generator.Generate(lm, [ids], greedy, (_, t) => { if (t.Count == 1) ttft = sw.Elapsed.TotalSeconds; return true; });
        double cached = sw.Elapsed.TotalSeconds;
        if (o.Profile)
            foreach (var (op, ms, share) in BenchCommand.ProfileByOp(lm.EndProfiling(), newTokens + 8))
                output.WriteLine($"  {op,-28} {ms,9:F3} ms/token {share,7:P1}");
        // Without a cache: every token re-runs the whole sequence (past length 0).
        int noCacheTokens = newTokens;
        var seq = ids.Select(t => (long)t).ToList();
        sw.Restart();
        for (int n = 0; n < noCacheTokens; n++)
        {
            using var state = lm.Start();
            var logits = state.Step([.. seq], Enumerable.Range(0, seq.Count).Select(i => (long)i).ToArray(), Enumerable.Repeat(1L, seq.Count).ToArray(), 1);
            int best = 0;
            for (int k = 1; k < logits.Length; k++) if (logits[k] > logits[best]) best = k;
            seq.Add(best);
        }
        double uncached = sw.Elapsed.TotalSeconds;
        var r = new Dictionary<string, object>
        {
            ["bench"] = "generate", ["layers"] = o.Layers, ["width"] = o.Width, ["vocab"] = o.Vocab, ["threads"] = o.Threads, ["prompt_tokens"] = prompt,
            ["new_tokens"] = newTokens, ["kv_cache_tokens_per_s"] = newTokens / cached, ["time_to_first_token_ms"] = ttft * 1000,
            ["no_cache_tokens_per_s"] = noCacheTokens / uncached, ["no_cache_tokens_measured"] = noCacheTokens,
            ["cache_speedup"] = newTokens / cached / (noCacheTokens / uncached),
        };
        if (o.Json) output.WriteLine(JsonSerializer.Serialize(r));
        else output.WriteLine($"GPT-2 {o.Layers}L/{o.Width}, vocab {o.Vocab}, {o.Threads} threads, prompt {prompt}: KV cache {newTokens / cached:F1} tokens/s " +
            $"(first token {ttft * 1000:F0} ms), no cache {noCacheTokens / uncached:F1} tokens/s over {noCacheTokens} tokens -> {r["cache_speedup"]:F1}x");
        return 0;
    }
}

/// <summary>
/// <c>optimum-net bench serve</c>: the completions service on 127.0.0.1 with the benchmark GPT-2, under
/// a fixed number of concurrent clients: p50/p99 latency, requests/s and generated tokens/s.
/// </summary>
public static class BenchServe
{
    public static int Run(BenchOptions o, int clients, int requests, int maxTokens, TextWriter output)
    {
        var cfg = new Gpt2Config { VocabSize = o.Vocab, NPositions = 256, NEmbd = o.Width, NLayer = o.Layers, NHead = o.Heads, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 };
        var dir = Path.Combine(o.WorkDir, $"gpt2-serve-{o.Layers}x{o.Width}-v{o.Vocab}");
        ModelKinds.WritePreset(dir, cfg, seed: 0);
        var app = Optimum.Server.OptimumServer.Build(["--urls", "http://127.0.0.1:0", $"--Optimum:Models:0={dir}", $"--Optimum:Threads={Math.Max(1, o.Threads / 2)}",
            "--Optimum:MaxConcurrent=2", $"--Optimum:QueueLimit={clients * 2}", "--Logging:LogLevel:Default=Warning"]);
        app.StartAsync().GetAwaiter().GetResult();
        try
        {
            var address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
                .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(5) };
            var body = $"{{\"prompt\": \"Call me Ishmael. Some years ago\", \"max_tokens\": {maxTokens}, \"temperature\": 0}}";
            http.PostAsync("/v1/completions", new StringContent(body)).GetAwaiter().GetResult().EnsureSuccessStatusCode();   // warm-up
            var latencies = new System.Collections.Concurrent.ConcurrentBag<double>();
            int failures = 0;
            var clock = Stopwatch.StartNew();
            Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
            {
                for (int i = 0; i < requests; i++)
                {
                    var t = Stopwatch.GetTimestamp();
                    using var r = await http.PostAsync("/v1/completions", new StringContent(body));
                    if (r.IsSuccessStatusCode) latencies.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
                    else Interlocked.Increment(ref failures);
                }
            })).GetAwaiter().GetResult();
            double seconds = clock.Elapsed.TotalSeconds;
            var sorted = latencies.Order().ToArray();
            double P(double q) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];
            var res = new Dictionary<string, object>
            {
                ["bench"] = "serve", ["layers"] = o.Layers, ["width"] = o.Width, ["vocab"] = o.Vocab, ["clients"] = clients, ["requests"] = clients * requests,
                ["max_tokens"] = maxTokens, ["ok"] = sorted.Length, ["failed"] = failures, ["p50_ms"] = P(0.5), ["p99_ms"] = P(0.99),
                ["requests_per_s"] = sorted.Length / seconds, ["tokens_per_s"] = sorted.Length * maxTokens / seconds,
            };
            if (o.Json) output.WriteLine(JsonSerializer.Serialize(res));
            else output.WriteLine($"service, GPT-2 {o.Layers}L/{o.Width}, {clients} concurrent clients x {requests} requests of {maxTokens} tokens: " +
                $"p50 {P(0.5):F0} ms, p99 {P(0.99):F0} ms, {sorted.Length / seconds:F2} requests/s, {sorted.Length * maxTokens / seconds:F0} tokens/s, {failures} failed");
            return failures == 0 ? 0 : 1;
        }
        finally
        {
            app.StopAsync().GetAwaiter().GetResult();
            ((IDisposable)app).Dispose();
        }
    }
}

/// <summary>
/// <c>optimum-net bench t5</c>: training throughput of a T5 (default 6+6 layers, d_model 384, source 128,
/// target 64, batch 8) against ORT's MatMul peak measured in the same run, and greedy generation
/// tokens/s with the encoder run once and the self-attention cache.
/// </summary>
public static class BenchT5
{
    public static int Run(BenchOptions o, int src, int tgt, int vocab, TextWriter output)
    {
        var peak = new[] { (2048, 2048, 2048), (1024, 384, 1536) }.Max(s => MatMulGflops(o.Threads, s));
        var cfg = new T5Config
        {
            VocabSize = vocab, DModel = o.Width, DKv = o.Width / o.Heads, NumHeads = o.Heads, DFf = 4 * o.Width, NumLayers = o.Layers, NumDecoderLayers = o.Layers,
            FeedForwardProj = "relu", DropoutRate = 0, MaxLength = Math.Max(src, tgt) * 2,
        };
        var dir = Path.Combine(o.WorkDir, $"t5-{o.Layers}x{o.Width}-v{vocab}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        using var store = new ParameterStore(ps);
        var weights = ModelKinds.Initialize(ps, cfg, 0);
        store.Load(weights);
        using var session = new TrainingSession(dir, store, new SessionSettings { IntraOpThreads = o.Threads, ProfilePrefix = o.Profile ? Path.Combine(o.WorkDir, "t5-profile") : null });
        using var adam = Optimizer.Create(store, new OptimizerConfig());
        var rng = new Random(0);
        long[] R(int n) => Enumerable.Range(0, n).Select(_ => (long)rng.Next(3, vocab)).ToArray();
        var batch = new Batch
        {
            ["input_ids"] = new(R(o.Batch * src), [o.Batch, src]), ["attention_mask"] = new(Enumerable.Repeat(1L, o.Batch * src).ToArray(), [o.Batch, src]),
            ["labels"] = new(R(o.Batch * tgt), [o.Batch, tgt]),
        };
        double seconds = 0;
        for (int s = 0; s < 2 + o.Steps; s++)
        {
            var t0 = Stopwatch.GetTimestamp();
            session.TrainStep(batch);
            adam.Step(s + 1, 1e-4);
            if (s >= 2) seconds += Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        double step = seconds / o.Steps;
        if (o.Profile)
            foreach (var (op, ms, share) in BenchCommand.ProfileByOp(session.EndProfiling()[0], o.Steps + 2).Take(12))
                output.WriteLine($"  {op,-28} {ms,9:F1} ms/step {share,7:P1}");
        long emb = (long)vocab * o.Width;
        long encP = ps.Where(p => p.Name.StartsWith("encoder.", StringComparison.Ordinal)).Sum(p => p.Count);
        long decP = ps.Where(p => p.Name.StartsWith("decoder.", StringComparison.Ordinal)).Sum(p => p.Count);
        double srcTokens = (double)o.Batch * src, tgtTokens = (double)o.Batch * tgt, inner = cfg.Inner;
        double flops = 6.0 * (encP * srcTokens + (decP + emb) * tgtTokens)
            + 12.0 * o.Layers * inner * (src * srcTokens + tgt * tgtTokens + src * tgtTokens);
        double gflops = flops / step / 1e9;
        // Generation: encoder once, then the decoder token by token with its caches.
        using var lm = new Optimum.Inference.Seq2SeqLm(dir, weights, new SessionSettings { IntraOpThreads = o.Threads });
        var source = Enumerable.Range(0, src).Select(_ => rng.Next(3, vocab)).ToArray();
        var greedy = new Optimum.Inference.GenerationOptions { MaxNewTokens = tgt, EosTokenId = -1 };
        lm.Generate([source], greedy with { MaxNewTokens = 4 });
        var sw = Stopwatch.StartNew();
        var gen = lm.Generate([source], greedy)[0];
        double genRate = gen.Tokens.Count / sw.Elapsed.TotalSeconds;
        var r = new Dictionary<string, object>
        {
            ["bench"] = "t5", ["layers"] = o.Layers, ["d_model"] = o.Width, ["heads"] = o.Heads, ["vocab"] = vocab, ["source"] = src, ["target"] = tgt, ["batch"] = o.Batch,
            ["threads"] = o.Threads, ["parameters"] = ps.Sum(p => p.Count), ["step_ms"] = step * 1000, ["tokens_per_s"] = (srcTokens + tgtTokens) / step,
            ["model_gflop_per_step"] = flops / 1e9, ["gflops_per_s"] = gflops, ["matmul_peak_gflops_per_s"] = peak, ["fraction_of_matmul_peak"] = gflops / peak,
            ["generate_tokens_per_s"] = genRate,
        };
        if (o.Json) output.WriteLine(JsonSerializer.Serialize(r));
        else output.WriteLine($"T5 {o.Layers}+{o.Layers} layers, d_model {o.Width}, vocab {vocab}, source {src} / target {tgt}, batch {o.Batch}, {o.Threads} threads, {r["parameters"]:N0} params:\n" +
            $"  step {step * 1000:F0} ms, {(srcTokens + tgtTokens) / step:N0} tokens/s, {flops / 1e9:F1} GFLOP/step, {gflops:F1} GFLOP/s = {gflops / peak:P1} of the MatMul peak {peak:F1}\n" +
            $"  greedy generation with caches: {genRate:F1} tokens/s");
        return 0;
    }

    private static double MatMulGflops(int threads, (int M, int K, int N) s)
    {
        var g = new GraphBuilder("matmul");
        g.Output(g.MatMul(g.Input("a", DType.Float, Shape.Of(s.M, s.K)), g.Input("b", DType.Float, Shape.Of(s.K, s.N))), "c");
        using var options = new SessionSettings { IntraOpThreads = threads }.CreateOptions();
        using var session = new InferenceSession(ModelWriter.ToBytes(g), options);
        using var a = OrtValue.CreateTensorValueFromMemory(new float[s.M * s.K], [s.M, s.K]);
        using var b = OrtValue.CreateTensorValueFromMemory(new float[s.K * s.N], [s.K, s.N]);
        using var c = OrtValue.CreateTensorValueFromMemory(new float[s.M * s.N], [s.M, s.N]);
        using var binding = session.CreateIoBinding();
        binding.BindInput("a", a);
        binding.BindInput("b", b);
        binding.BindOutput("c", c);
        using var run = new RunOptions();
        session.RunWithBinding(run, binding);
        var t = Stopwatch.StartNew();
        for (int i = 0; i < 4; i++) session.RunWithBinding(run, binding);
        return 2.0 * s.M * s.K * s.N * 4 / t.Elapsed.TotalSeconds / 1e9;
    }
}
