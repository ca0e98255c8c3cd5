// Optimum.Net from your own app, through the libraries alone: train GPT-2 on a text file, generate from it,
// and forecast a series with an Informer. Each part is about ten lines; the README quotes them.
// Usage: dotnet run -c Release --project samples/Quickstart [-- --steps N --out DIR]
using Optimum.Core;
using Optimum.Inference;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Training;

long steps = 100;
string outDir = "out/quickstart";
for (int i = 0; i < args.Length; i += 2)
{
    if (args[i] == "--steps" && i + 1 < args.Length && long.TryParse(args[i + 1], out var n) && n > 0) steps = n;
    else if (args[i] == "--out" && i + 1 < args.Length) outDir = args[i + 1];
    else { Console.Error.WriteLine($"error: unknown option or missing value at '{args[i]}' (use --steps N, --out DIR)"); return 2; }
}

// 1. Train the bundled small GPT-2 on a text file: checkpoints, metrics.jsonl, loss.png, final/ and hf/ under out/.
// Overwrite: a second run starts over (without it, a folder holding an earlier run is refused; Resume continues it).
var gpt2 = new TrainerOptions { ModelDir = "models/gpt2-mini", OutputDir = $"{outDir}/gpt2", Steps = steps, BatchSize = 8, Lr = 2e-3, Warmup = 10, Overwrite = true };
TrainingJob.Run(new TrainingJobOptions(gpt2, ["samples/data/moby-dick.txt"], SeqLen: 128), Console.Out);

// 2. Generate from the trained model (any kind loads the same way; a language model has a Generator).
using (var model = ModelKinds.Load($"{outDir}/gpt2/final"))
{
    var completion = model.Generator!.Complete("Call me Ishmael.", new GenerationOptions { MaxNewTokens = 30, Temperature = 0.8, Seed = 1 });
    Console.WriteLine($"Call me Ishmael.{completion.Text}");
}

// 3. Forecast a series: a small Informer trained on the 14 monthly unemployment series, then 12 months ahead.
ModelKinds.Write($"{outDir}/informer-model", TimeSeriesConfig.Monthly("informer", seriesCount: 14));
var informer = new TrainerOptions { ModelDir = $"{outDir}/informer-model", OutputDir = $"{outDir}/informer", Steps = steps, BatchSize = 64, Lr = 1e-3, Overwrite = true };
TrainingJob.Run(new TrainingJobOptions(informer, ["samples/data/unemployment-across-industries.json"]), Console.Out);
using (var forecaster = new Forecaster($"{outDir}/informer/final"))
{
    float[] history = [430, 409, 311, 269, 370, 603, 545, 583, 408, 391, 424, 580, 650, 587, 476, 400, 500, 637, 578, 614, 456, 385, 418, 574];
    var series = new SeriesInput { Values = history, Start = new DateTime(2000, 1, 1), StaticCategorical = [forecaster.SeriesIndex("Government")] };
    var forecast = forecaster.Predict([series], new ForecastOptions { Samples = 100, Seed = 1 })[0];
    Console.WriteLine($"Government, next 12 months (median): {string.Join(", ", forecast.Median.Select(v => v.ToString("F0")))}");
}
return 0;
