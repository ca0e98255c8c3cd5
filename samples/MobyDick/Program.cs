// Trains models/gpt2-mini (4 layers, width 128, GPT-2's 50,257-token BPE) on Moby-Dick from its
// emitted ONNX training graph, then continues a few prompts with the trained model.
// Usage: dotnet run -c Release --project samples/MobyDick [-- --steps N --out DIR]
using Optimum.Core;
using Optimum.Models;
using Optimum.Inference;
using Optimum.Training;

long steps = 300;
string outDir = "out/moby-dick";
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (args[i] == "--steps") steps = long.Parse(args[i + 1]);
    else if (args[i] == "--out") outDir = args[i + 1];
    else { Console.Error.WriteLine($"error: unknown option {args[i]} (use --steps N, --out DIR)"); return 2; }
}

var options = new TrainerOptions
{
    ModelDir = "models/gpt2-mini", OutputDir = outDir, Steps = steps, BatchSize = 8, Lr = 2e-3, Warmup = Math.Min(30, steps),
    Schedule = ScheduleKind.Cosine, ClipNorm = 1.0, EvalEvery = Math.Max(1, (int)steps / 6), EvalSamples = 64, SaveEvery = 0, Seed = 0,
    Optimizer = new OptimizerConfig { WeightDecay = 0.1, Beta2 = 0.99 },
    Overwrite = true,                                   // a second run into the same --out trains again from scratch
};
TrainResult r;
try { r = TrainingJob.Run(new TrainingJobOptions(options, ["samples/data/moby-dick.txt"], SeqLen: 128), Console.Out); }
catch (Exception e) when (ExpectedErrors.Are(e)) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }
Console.WriteLine($"validation loss: {r.Evals[0].ValidationLoss:F3} at step {r.Evals[0].Step} -> {r.Evals[^1].ValidationLoss:F3} at step {r.Evals[^1].Step}");
if (r.Interrupted) return 130;

using var model = ModelKinds.Load(Path.Combine(outDir, "final"));
var generator = model.Generator!;
foreach (var (prompt, seed) in new[] { ("Call me Ishmael.", 1), ("The whale", 2), ("Captain Ahab said", 3) })
{
    var c = generator.Complete(prompt, new GenerationOptions { MaxNewTokens = 40, Temperature = 0.8, TopK = 40, RepetitionPenalty = 1.2, Seed = seed });
    Console.WriteLine($"> {prompt}{c.Text.ReplaceLineEndings(" ")}");
}
return 0;
