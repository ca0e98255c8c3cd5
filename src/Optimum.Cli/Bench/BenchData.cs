using System.Diagnostics;
using Optimum.Core;
using Optimum.Data;
using Optimum.Models;
using Optimum.Training;

namespace Optimum.Cli;

/// <summary>What <c>bench data</c> builds and trains on.</summary>
/// <param name="SizeMb">Size of the large dataset's .bin in MB (2048: about a billion GPT-2 ids).</param>
/// <param name="TokenizeMb">MB of text tokenized to measure preprocessing throughput (the large dataset repeats those documents).</param>
/// <param name="Workers">Preprocessing threads.</param>
/// <param name="Batch">Training windows per step.</param>
/// <param name="Seq">Tokens per window.</param>
/// <param name="Keep">Keep the temporary folder (default: deleted at the end).</param>
public sealed record DataBenchSize(int SizeMb = 2048, int TokenizeMb = 32, int Workers = 2, int Batch = 8, int Seq = 128, bool Keep = false);

/// <summary>
/// <c>optimum-net bench data</c>: (1) preprocessing throughput (MB/s of text, share in the tokenizer) on Moby-Dick's paragraphs
/// shuffled into documents; (2) a large dataset made from those tokenized documents repeated in shuffled order (tokenizing
/// gigabytes here would take the bench's whole budget: the throughput figure of (1) says how long); (3) a short training of the
/// bundled gpt2-mini on Moby-Dick in memory, on Moby-Dick memory-mapped and on the large dataset memory-mapped: tokens/s and
/// peak resident memory of each (the in-memory run goes first and absorbs the process's one-time costs). Works in a temporary
/// folder, deleted at the end.
/// </summary>
public static class BenchData
{
    public static int Run(BenchRun run, DataBenchSize size, string model, string moby, TextWriter output)
    {
        var report = new BenchReport(run.Json, output);
        var tmp = Path.Combine(Path.GetTempPath(), $"optimum-bench-data-{Environment.ProcessId}");
        long free = new DriveInfo(Path.GetTempPath()).AvailableFreeSpace;
        long need = (long)size.SizeMb * 1_000_000 + (long)size.TokenizeMb * 3_000_000 + 500_000_000;
        if (free < need)
            throw new IOException($"bench data needs about {need / 1e9:F1} GB free in {Path.GetTempPath()} for --size-mb {size.SizeMb}; {free / 1e9:F1} GB are free: give a smaller --size-mb.");
        Directory.CreateDirectory(tmp);
        try
        {
            var tok = ModelKinds.DocumentTokenizer(model);
            // (1) Preprocessing throughput.
            var texts = Path.Combine(tmp, "text");
            WriteShuffledText(File.ReadAllText(moby), texts, size.TokenizeMb * 1_000_000L);
            PeakMemory.TakeMegabytes();
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var pre = Preprocessor.Run(new PreprocessOptions { Inputs = [texts], OutputPrefix = Path.Combine(tmp, "sample"), Workers = size.Workers }, tok);
            double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
            report.AddSpeed("data_preprocess", new Dictionary<string, object>
            {
                // CPU seconds say what the cores did when other work shares the machine (wall-clock MB/s then understates).
                ["cpu_seconds"] = cpu, ["mb_per_cpu_s"] = pre.Bytes / 1e6 / cpu,
                ["text_mb"] = pre.Bytes / 1e6, ["documents"] = pre.Documents, ["tokens"] = pre.Tokens, ["workers"] = pre.Workers, ["seconds"] = pre.Elapsed.TotalSeconds,
                ["mb_per_s"] = pre.MegabytesPerSecond, ["tokens_per_s"] = pre.Tokens / pre.Elapsed.TotalSeconds, ["tokenizer_share"] = pre.TokenizerShare,
                ["decode_share"] = pre.DecodeSeconds / (pre.ReadSeconds + pre.DecodeSeconds + pre.TokenizeSeconds + pre.WriteSeconds),
                ["io_share"] = (pre.ReadSeconds + pre.WriteSeconds) / (pre.ReadSeconds + pre.DecodeSeconds + pre.TokenizeSeconds + pre.WriteSeconds),
            });
            Directory.Delete(texts, true);

            // (2) The large dataset, and Moby-Dick as one.
            var big = Path.Combine(tmp, "big");
            var clock = Stopwatch.StartNew();
            Repeat(Path.Combine(tmp, "sample"), big, size.SizeMb * 1_000_000L, tok.Identity);
            double build = clock.Elapsed.TotalSeconds;
            var mobyDs = Path.Combine(tmp, "moby");
            Preprocessor.Run(new PreprocessOptions { Inputs = [moby], OutputPrefix = mobyDs, Workers = size.Workers }, tok);
            clock.Restart();
            long ids;
            using (var ds = IndexedDataset.Open(big, tok.Identity)) ids = ds.Tokens;
            double verify = clock.Elapsed.TotalSeconds;
            report.Add("data_build", new Dictionary<string, object>
            {
                ["bin_mb"] = new FileInfo(big + ".bin").Length / 1e6, ["ids"] = ids, ["write_seconds"] = build, ["open_verify_seconds"] = verify,
                ["verify_mb_per_s"] = new FileInfo(big + ".bin").Length / 1e6 / verify,
            });

            // (3) Training: in memory first (one-time costs), then memory-mapped Moby-Dick, then the large dataset.
            var runs = new (string Name, string Data)[] { ("moby-in-memory", moby), ("moby-mmap", mobyDs), ($"big-mmap", big) };
            var rss = new Dictionary<string, double>();
            foreach (var (name, data) in runs)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                PeakMemory.TakeMegabytes();
                var o = new TrainerOptions
                {
                    ModelDir = model, OutputDir = Path.Combine(tmp, "out-" + name), Steps = run.Warmup + run.Steps, BatchSize = size.Batch, Lr = 1e-3, Warmup = 0,
                    Schedule = ScheduleKind.Constant, EvalEvery = 0, EvalSamples = size.Batch, SaveEvery = 0, KeepCheckpoints = 1, Seed = 0, Export = false,
                    Session = run.Session(),
                };
                TrainResult r;
                long binBytes = name.EndsWith("mmap") ? new FileInfo(data + ".bin").Length : new FileInfo(data).Length;
                using (var job = TrainingJob.Open(new TrainingJobOptions(o, [data], size.Seq, CacheDir: Path.Combine(tmp, "cache"))))
                    r = job.Run();
                var measured = r.History.Skip(run.Warmup).ToArray();
                double tps = measured.Sum(m => m.TokensPerSecond * m.StepSeconds) / measured.Sum(m => m.StepSeconds);
                rss[name] = report.AddSpeed("data_train", new Dictionary<string, object>
                {
                    ["data"] = name, ["data_mb"] = binBytes / 1e6, ["steps"] = measured.Length, ["batch"] = size.Batch, ["seq"] = size.Seq, ["threads"] = run.Threads,
                    ["tokens_per_s"] = tps, ["last_loss"] = r.History[^1].Loss,
                });
            }
            report.Add("data_memory", new Dictionary<string, object>
            {
                ["big_minus_moby_rss_mb"] = rss["big-mmap"] - rss["moby-mmap"], ["limit_mb"] = 100, ["big_mb"] = size.SizeMb,
            });
            report.Print();
            return 0;
        }
        finally
        {
            if (!size.Keep) Directory.Delete(tmp, true);
        }
    }

    /// <summary>Moby-Dick's paragraphs, shuffled (seeded) into documents of about 256 KB, until <paramref name="bytes"/> are written.</summary>
    private static void WriteShuffledText(string text, string dir, long bytes)
    {
        Directory.CreateDirectory(dir);
        var paragraphs = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var rng = new Random(19);
        long written = 0;
        for (int doc = 0; written < bytes; doc++)
        {
            var sb = new System.Text.StringBuilder();
            while (sb.Length < 256_000) sb.Append(paragraphs[rng.Next(paragraphs.Length)]).Append("\n\n");
            var path = Path.Combine(dir, $"doc-{doc:D6}.txt");
            File.WriteAllText(path, sb.ToString());
            written += new FileInfo(path).Length;
        }
    }

    /// <summary>Writes the documents of <paramref name="sample"/> again and again, each pass in a new seeded order, until the .bin holds <paramref name="bytes"/>.</summary>
    private static void Repeat(string sample, string prefix, long bytes, TokenizerIdentity tok)
    {
        using var src = IndexedDataset.Open(sample, tok);
        var docs = Enumerable.Range(0, (int)src.Documents).Select(i => src.Document(i)).ToArray();
        using var w = new IndexedDatasetWriter(prefix, tok);
        var rng = new Random(7);
        var order = Enumerable.Range(0, docs.Length).ToArray();
        while (w.Tokens * w.BytesPerId < bytes)
        {
            rng.Shuffle(order);
            foreach (var i in order)
            {
                w.Add(docs[i], $"document {i}");
                if (w.Tokens * w.BytesPerId >= bytes) break;
            }
        }
        w.Commit();
    }
}
