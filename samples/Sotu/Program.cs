// Adapts the main job's Moby-Dick model (out/moby-dick/final) to the State of the Union addresses of 2001-2016 in two ways
// for the same steps, batch and data order: LoRA (r 8 on every linear layer but the head, the base frozen) and full
// fine-tuning. Each runs in its own process, so its peak resident memory is its own. Prints validation loss on the
// addresses before and after, trainable parameters, optimizer state, step time and peak memory; writes
// out/sotu/validation.png (both validation curves) and out/sotu/summary.json.
// Usage: dotnet run -c Release --project samples/Sotu [-- --steps 200 --base out/moby-dick/final --out out/sotu]
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Optimum.Core;
using Optimum.Onnx.Lora;
using Optimum.Training;

long steps = 200;
string baseDir = "out/moby-dick/final", outDir = "out/sotu", data = "samples/data/sotu-2001-2016.txt";
string? phase = null;
for (int i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--steps": steps = long.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
        case "--base": baseDir = args[i + 1]; break;
        case "--out": outDir = args[i + 1]; break;
        case "--phase": phase = args[i + 1]; break;
        default: Console.Error.WriteLine($"error: unknown option {args[i]} (use --steps N, --base DIR, --out DIR)"); return 2;
    }
}
if (args.Length % 2 != 0) { Console.Error.WriteLine($"error: {args[^1]} needs a value"); return 2; }
if (steps < 1) { Console.Error.WriteLine("error: --steps must be at least 1"); return 2; }
if (!File.Exists(Path.Combine(baseDir, "model.safetensors")))
{
    Console.Error.WriteLine($"error: '{baseDir}' holds no trained model (model.safetensors): run the main job first (dotnet run -c Release --project samples/MobyDick) or give --base");
    return 1;
}
if (phase is not null) return RunPhase(phase);

var phases = new[] { "lora", "full" };
var results = new Dictionary<string, PhaseResult>();
foreach (var p in phases)
{
    Console.WriteLine($"== {(p == "lora" ? "LoRA r 8" : "full fine-tuning")}, {steps} steps ==");
    var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
    foreach (var a in new[] { "--phase", p, "--steps", steps.ToString(CultureInfo.InvariantCulture), "--base", baseDir, "--out", outDir }) psi.ArgumentList.Add(a);
    using var child = Process.Start(psi)!;
    string? line, json = null;
    while ((line = child.StandardOutput.ReadLine()) is not null)
        if (line.StartsWith("RESULT ", StringComparison.Ordinal)) json = line["RESULT ".Length..];
        else Console.WriteLine("  " + line);
    child.WaitForExit();
    if (child.ExitCode != 0 || json is null) { Console.Error.WriteLine($"error: the {p} run failed (exit {child.ExitCode})"); return child.ExitCode == 0 ? 1 : child.ExitCode; }
    results[p] = JsonSerializer.Deserialize<PhaseResult>(json)!;
}

var (lora, full) = (results["lora"], results["full"]);
Console.WriteLine();
Console.WriteLine($"State of the Union 2001-2016, validation loss of the Moby-Dick model before: {lora.Before:F3} (LoRA run) / {full.Before:F3} (full run)");
Console.WriteLine($"{"",-18} {"val loss after",14} {"trainable",12} {"optimizer state",16} {"step ms",8} {"peak RSS MB",12}");
foreach (var (name, r) in new[] { ("LoRA r 8", lora), ("full fine-tuning", full) })
    Console.WriteLine($"{name,-18} {r.After,14:F3} {r.Trainable,12:N0} {r.OptimizerBytes / 1e6,13:F2} MB {r.StepMs,8:F1} {r.PeakRssMb,12:F0}");
Console.WriteLine($"LoRA trains {100.0 * lora.Trainable / full.Trainable:F2}% of the parameters; adapter: {Path.Combine(outDir, "lora", "adapter")}");

var png = Path.Combine(outDir, "validation.png");
var plt = new ScottPlot.Plot();
foreach (var (name, r) in new[] { ("LoRA r 8", lora), ("full fine-tuning", full) })
{
    var s = plt.Add.Scatter(r.Evals.Select(e => (double)e[0]).ToArray(), r.Evals.Select(e => e[1]).ToArray());
    s.LegendText = name;
}
plt.Title("Moby-Dick GPT-2 adapted to State of the Union 2001-2016");
plt.XLabel("step");
plt.YLabel("validation loss");
Optimum.Plots.Plot.Save(plt, png);
AtomicFile.Write(Path.Combine(outDir, "summary.json"), JsonSerializer.SerializeToUtf8Bytes(results, new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"validation curves: {png}; numbers: {Path.Combine(outDir, "summary.json")}");
return 0;

int RunPhase(string p)
{
    if (p is not ("lora" or "full")) { Console.Error.WriteLine($"error: --phase must be lora or full, not '{p}'"); return 2; }
    var options = new TrainerOptions
    {
        ModelDir = baseDir, OutputDir = Path.Combine(outDir, p), Steps = steps, BatchSize = 8, Warmup = Math.Min(20, steps),
        Schedule = ScheduleKind.Cosine, ClipNorm = 1.0, EvalEvery = Math.Max(1, (int)steps / 5), EvalSamples = 64, SaveEvery = 0, Seed = 0,
        // LoRA trains far fewer, zero-started weights and takes a larger step, as PEFT's examples do.
        Lr = p == "lora" ? 1e-2 : 5e-4,
        Optimizer = new OptimizerConfig { WeightDecay = p == "lora" ? 0.0 : 0.1, Beta2 = 0.99 },
        Lora = p == "lora" ? new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["c_attn", "c_proj", "c_fc"] } : null,
        Overwrite = true,
    };
    using var job = TrainingJob.Open(new TrainingJobOptions(options, [data], SeqLen: 128), log: Console.WriteLine);
    job.WriteProgressTo(Console.Out);
    long trainable = job.Trainer.Store.Used, optimizerBytes = job.Trainer.Optimizer.StateBytes;
    var r = job.Run();
    if (r.Interrupted) return 130;
    var times = r.History.Skip(Math.Min(5, r.History.Count - 1)).Select(m => m.StepSeconds).ToArray();   // the first steps warm up
    var result = new PhaseResult(r.Evals[0].ValidationLoss, r.Evals[^1].ValidationLoss, trainable, optimizerBytes, 1000 * times.Average(), PeakRssMb(),
        r.Evals.Select(e => new[] { e.Step, e.ValidationLoss }).ToArray());
    Console.WriteLine("RESULT " + JsonSerializer.Serialize(result));
    return 0;
}

static double PeakRssMb()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
    return double.NaN;
}

record PhaseResult(double Before, double After, long Trainable, long OptimizerBytes, double StepMs, double PeakRssMb, double[][] Evals);
