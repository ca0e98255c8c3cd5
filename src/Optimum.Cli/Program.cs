using System.CommandLine;
using Optimum.Cli;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Training;
using Optimum.Core;
using Optimum.Data;

var root = new RootCommand("optimum-net: train and serve transformer models on ONNX Runtime.");
// Piped or redirected output is read by programs and logs: lines are not wrapped at 80 columns (paths stayed broken).
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 4096;

// artifacts: regenerate the committed default artifacts.
var artifactsOut = new Option<string>("--out") { Description = "Folder that receives one subfolder per default model.", DefaultValueFactory = _ => "models" };
var artifacts = new Command("artifacts", "Regenerate the default model artifacts (deterministic: same bytes every time).") { artifactsOut };
artifacts.SetAction(r => ExpectedErrors.Report(() =>
{
    foreach (var (name, config) in ModelKinds.Defaults)
    {
        var dir = Path.Combine(r.GetValue(artifactsOut)!, name);
        ModelKinds.Write(dir, config);
        Console.WriteLine($"wrote {dir}");
    }
    return 0;
}));
root.Subcommands.Add(artifacts);

// export: an HF GPT-2 folder (or a preset) to an artifact folder.
var exportSrc = new Argument<string?>("hf-folder") { Description = "HF folder with config.json (+ model.safetensors); omit with --preset.", Arity = ArgumentArity.ZeroOrOne };
var exportDst = new Option<string>("--out", "-o") { Description = "Artifact folder to write.", Required = true };
var preset = new Option<string?>("--preset") { Description = "Built-in config instead of an HF folder: gpt2-mini." };
var exportSeed = new Option<int>("--seed") { Description = "Initialisation seed when there is no checkpoint.", DefaultValueFactory = _ => 0 };
var export = new Command("export", "Write the graphs, config.json and model.safetensors for an HF GPT-2, T5, TimeSeriesTransformer or Informer folder (or a preset).") { exportSrc, exportDst, preset, exportSeed };
export.SetAction(r => ExpectedErrors.Report(() =>
{
    string src = r.GetValue(exportSrc) ?? "", dst = CliPaths.OutputFolder(r.GetValue(exportDst)!, "--out"), name = r.GetValue(preset) ?? "";
    if ((src == "") == (name == "")) throw new ArgumentException("Give either an HF folder or --preset, not both or neither.");
    if (name != "")
    {
        if (!ModelKinds.Presets.TryGetValue(name, out var config)) throw new ArgumentException($"Unknown preset '{name}'; presets: {string.Join(", ", ModelKinds.Presets.Keys)}.");
        ModelKinds.WritePreset(dst, config, r.GetValue(exportSeed));
        Console.WriteLine($"wrote {dst} (preset {name}, weights from seed {r.GetValue(exportSeed)})");
        return 0;
    }
    var unused = ModelKinds.Export(src, dst, r.GetValue(exportSeed));
    foreach (var u in unused) Console.Error.WriteLine($"warning: checkpoint tensor '{u}' is not a parameter of the model and was ignored");
    Console.WriteLine($"wrote {dst} from {src}");
    return 0;
}));
root.Subcommands.Add(export);
root.Subcommands.Add(QuantizeCommand.Create());

// train: a model folder on text files.
var tModel = new Option<string>("--model") { Description = "Model folder (config.json, training.onnx, eval.onnx; model.safetensors optional).", DefaultValueFactory = _ => CliPaths.Bundled("models/gpt2-mini") };
var tData = new Option<string[]>("--data") { Description = "What the model's kind trains on: " + string.Join("; ", ModelKinds.All.Select(k => $"{string.Join("/", k.ModelTypes)}: {k.TrainingData}")) + ".", AllowMultipleArgumentsPerToken = true };
var tBlend = new Option<string[]>("--data-blend") { Description = "Causal LMs: datasets made by preprocess mixed by weight, as weight-prefix pairs (e.g. 0.7 web 0.3 books); instead of --data.", AllowMultipleArgumentsPerToken = true };
var tOut = new Option<string>("--out") { Description = "Output folder: checkpoints/, metrics.jsonl, loss.png, final/, hf/. One run at a time (a second run into it is refused); " +
    "a new run refuses a folder that holds another run's checkpoints or metrics: continue it with --resume latest or start over with --overwrite.", DefaultValueFactory = _ => "out/train" };
var tSteps = new Option<long>("--steps") { Description = "Optimizer updates.", DefaultValueFactory = _ => 200 };
var tBatch = new Option<int>("--batch-size") { Description = "Sequences per micro-batch.", DefaultValueFactory = _ => 8 };
var tSeq = new Option<int?>("--seq-len") { Description = "Causal LMs (gpt2): tokens per training window (default 128, or n_positions when smaller). Other kinds train at their config's lengths and refuse it." };
var tLr = new Option<double>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 1e-3 };
var tWarm = new Option<long>("--warmup") { Description = "Linear warmup updates.", DefaultValueFactory = _ => 20 };
var tSched = new Option<string>("--schedule") { Description = "constant, linear or cosine.", DefaultValueFactory = _ => "cosine" };
var tAccum = new Option<int>("--grad-accum") { Description = "Micro-batches per update.", DefaultValueFactory = _ => 1 };
var tClip = new Option<double>("--clip") { Description = "Global gradient-norm clip (0 = off).", DefaultValueFactory = _ => 1.0 };
var tEval = new Option<int>("--eval-every") { Description = "Validate every N updates (0 = at the end).", DefaultValueFactory = _ => 50 };
var tEvalN = new Option<int>("--eval-samples") { Description = "Validation sequences per evaluation (0 = all).", DefaultValueFactory = _ => 64 };
var tSave = new Option<int>("--save-every") { Description = "Checkpoint every N updates (0 = at the end).", DefaultValueFactory = _ => 100 };
var tKeep = new Option<int>("--keep") { Description = "Checkpoints kept.", DefaultValueFactory = _ => 2 };
var tResume = new Option<string?>("--resume") { Description = "Checkpoint folder, or 'latest' under --out." };
var tOverwrite = new Option<bool>("--overwrite") { Description = "Start over in an --out that holds an earlier run: delete its checkpoints/, metrics.jsonl, loss.png, final/ and hf/ first (nothing else)." };
var tSeed = new Option<int>("--seed") { Description = "Seed of initialisation, data order and dropout.", DefaultValueFactory = _ => 0 };
var tOpt = new Option<string>("--optimizer") { Description = "adamw or sgd.", DefaultValueFactory = _ => "adamw" };
var tWd = new Option<double>("--weight-decay") { Description = "Weight decay (not applied to biases and LayerNorm weights).", DefaultValueFactory = _ => 0.01 };
var tThreads = new Option<int?>("--threads") { Description = "ONNX Runtime intra-op threads per rank (default: cores / ranks on this machine)." };
var tRanks = new Option<int>("--ranks") { Description = "In-process ranks (threads) for ZeRO-1 without MPI; under mpirun the MPI world is used.", DefaultValueFactory = _ => 1 };
var tStop = new Option<long?>("--stop-after") { Description = "Stop with a checkpoint after this many updates (continue later with --resume latest)." };
var tSkip = new Option<bool>("--skip-nonfinite") { Description = "Skip updates with a non-finite loss or gradient norm instead of stopping." };
var tEma = new Option<bool>("--ema") { Description = "Keep an exponential moving average of the weights (diffusers' EMAModel: inv_gamma 1, power 3/4, max decay --ema-max-decay); checkpointed; final/ and hf/ get it." };
var tEmaDecay = new Option<double>("--ema-max-decay") { Description = "Largest EMA decay.", DefaultValueFactory = _ => 0.9999 };
var tFreeze = new Option<string[]>("--freeze") { Description = "Do not train the parameters matching this pattern (repeatable): '.'-separated segments, '*' within a segment, '**' across segments, a module name freezes all its parameters (e.g. 'transformer.h.*.attn', '**.bias', 'transformer.wte').", AllowMultipleArgumentsPerToken = false };
var tLabelDrop = new Option<double>("--label-dropout") { Description = "Class-conditional diffusion models: share of labels replaced by the null label (the last class embedding) for classifier-free guidance.", DefaultValueFactory = _ => 0.1 };
var tLoraR = new Option<int?>("--lora-r") { Description = "Train a LoRA adapter of this rank instead of the model (base frozen; <out>/adapter/ gets the PEFT adapter, final/ and hf/ the merged model)." };
var tLoraAlpha = new Option<double?>("--lora-alpha") { Description = "LoRA alpha (scaling alpha / r; default 8, PEFT's)." };
var tLoraTargets = new Option<string[]>("--lora-targets") { Description = "Module names or suffixes to adapt (repeatable, e.g. c_attn).", AllowMultipleArgumentsPerToken = true };
var tDevice = DeviceOption.Create();
var tOptGraph = new Option<bool>("--optimizer-graph") { Description = "Run the optimizer update as an ONNX graph on --device (for GPUs) instead of the fused C# update (faster on the CPU)." };
var tPrecision = new Option<string>("--precision") { Description = "What matrix products compute in: fp32 (strict float32 on CUDA), tf32 (TF32 tensor cores allowed on CUDA; float32 on the CPU), bf16 (needs --device cuda) or fp16 (dynamic loss scaling); softmax, norms, loss and the master weights stay float32.", DefaultValueFactory = _ => "fp32" };
var tStateOnDevice = new Option<string>("--state-on-device") { Description = "auto (the default: on for --device cuda, off on the CPU), on or off: keep parameters, gradients and optimizer state in the device's memory and step them there with ONNX graphs (only the loss and the gradient norm come to the host each step).", DefaultValueFactory = _ => "auto" };
var tLossScale = new Option<double>("--loss-scale") { Description = "fp16: the initial loss scale (halved on each overflowed step, doubled after 2000 good ones; torch's GradScaler).", DefaultValueFactory = _ => 65536 };
var tLoraDropout = new Option<double?>("--lora-dropout") { Description = "Dropout on the LoRA input (default 0)." };
var train = new Command("train", "Train a model folder on text with AdamW/SGD, schedules, clipping, accumulation, checkpoints and exact resume.")
{
    tModel, tData, tOut, tSteps, tBatch, tSeq, tLr, tWarm, tSched, tAccum, tClip, tEval, tEvalN, tSave, tKeep, tResume, tOverwrite, tSeed, tOpt, tWd, tThreads, tSkip, tRanks, tStop,
    tEma, tEmaDecay, tLabelDrop, tFreeze, tLoraR, tLoraAlpha, tLoraTargets, tLoraDropout, tDevice, tOptGraph, tBlend, tPrecision, tLossScale, tStateOnDevice,
};
train.SetAction(r =>
{
    // Under mpirun every process is one rank of the MPI world; a failing rank stops the whole job.
    // Counts are checked before anything starts (0 or negative ranks used to become 1, negative threads the default).
    if (r.GetValue(tRanks) < 1) { Console.Error.WriteLine($"error: --ranks {r.GetValue(tRanks)} must be at least 1."); return 1; }
    if (r.GetValue(tThreads) < 1) { Console.Error.WriteLine($"error: --threads {r.GetValue(tThreads)} must be at least 1 (leave it out for cores / ranks)."); return 1; }
    try { CliPaths.OutputFolder(r.GetValue(tOut)!, "--out"); }
    catch (ArgumentException e) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }
    using var mpi = Optimum.Distributed.MpiCommunicator.LaunchedByMpirun ? new Optimum.Distributed.MpiCommunicator() : null;
    int localRanks = mpi is null ? Math.Max(1, r.GetValue(tRanks)) : int.Parse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE") ?? "1");
    int threads = r.GetValue(tThreads) ?? Math.Max(1, Environment.ProcessorCount / localRanks);
    TrainerOptions options;
    IReadOnlyList<BlendPart>? blend;
    try
    {
        options = TrainerOptionsFrom(r, threads);
        options.Validate();
        blend = r.GetValue(tBlend) is { Length: > 0 } b ? BlendPart.Parse(b) : null;
        if ((blend is null) == (r.GetValue(tData) is not { Length: > 0 })) throw new ArgumentException("Give --data or --data-blend (one of them).");
    }
    catch (Exception e) when (e is ArgumentException or DeviceUnavailableException) // a bad --schedule, --optimizer, --resume or --device, or --resume with --overwrite
    {
        if (mpi is not { Rank: > 0 }) Console.Error.WriteLine($"error: {e.Message}");
        return 1;
    }
    using var cts = new CancellationTokenSource();
    ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
    Console.CancelKeyPress += onCancel;
    try
    {
        var command = new TrainingJobOptions(options, r.GetValue(tData) ?? [], r.GetValue(tSeq), LabelDropout: r.GetValue(tLabelDrop), DataBlend: blend);
        if (mpi is { Size: > 1 })
        {
            try { return TrainCommand.Run(command, cts.Token, mpi).Interrupted ? 130 : 0; }
            catch (RunFolderException e)
            {
                // Every rank was refused alike before any work: a plain exit, not an abort of the job.
                if (mpi.Rank == 0) Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
            catch (Exception e) { mpi.Abort($"{e.GetType().Name}: {e.Message}"); return 1; }
        }
        return ExpectedErrors.Report(() => TrainCommand.RunInProcess(command, localRanks, cts.Token).Interrupted ? 130 : 0);
    }
    finally { Console.CancelKeyPress -= onCancel; }
});
root.Subcommands.Add(train);

TrainerOptions TrainerOptionsFrom(ParseResult r, int threads) => new()
{
    ModelDir = r.GetValue(tModel)!, OutputDir = r.GetValue(tOut)!, Steps = r.GetValue(tSteps), BatchSize = r.GetValue(tBatch),
    GradAccum = r.GetValue(tAccum), Lr = r.GetValue(tLr), Warmup = r.GetValue(tWarm), Schedule = EnumNames.Parse<ScheduleKind>(r.GetValue(tSched)!, "--schedule"), ClipNorm = r.GetValue(tClip),
    EvalEvery = r.GetValue(tEval), EvalSamples = r.GetValue(tEvalN), SaveEvery = r.GetValue(tSave), KeepCheckpoints = r.GetValue(tKeep),
    Resume = r.GetValue(tResume) is { } resume ? CheckpointRef.Parse(resume) : null, Overwrite = r.GetValue(tOverwrite), Seed = r.GetValue(tSeed), SkipNonFinite = r.GetValue(tSkip),
    Optimizer = new OptimizerConfig { Kind = EnumNames.Parse<OptimizerKind>(r.GetValue(tOpt)!, "--optimizer"), WeightDecay = r.GetValue(tWd) },
    Session = new SessionSettings { IntraOpThreads = threads, Device = DeviceOption.Parse(r, tDevice) }, StopAfter = r.GetValue(tStop), OptimizerGraph = r.GetValue(tOptGraph),
    Ema = r.GetValue(tEma) ? new EmaOptions { MaxDecay = r.GetValue(tEmaDecay) } : null,
    Freeze = r.GetValue(tFreeze) ?? [],
    Lora = LoraFrom(r),
    Precision = EnumNames.Parse<TrainingPrecision>(r.GetValue(tPrecision)!, "--precision"),
    LossScaling = new LossScalerOptions { InitScale = r.GetValue(tLossScale) },
    StateOnDevice = r.GetValue(tStateOnDevice) switch
    {
        "auto" => null, "on" => true, "off" => false,
        var v => throw new ArgumentException($"--state-on-device '{v}' is not one of auto, on, off."),
    },
};

Optimum.Onnx.Lora.LoraConfig? LoraFrom(ParseResult r)
{
    if (r.GetValue(tLoraR) is not int rank)
    {
        if (r.GetValue(tLoraAlpha) is not null || r.GetValue(tLoraTargets) is { Length: > 0 } || r.GetValue(tLoraDropout) is not null)
            throw new ArgumentException("--lora-alpha, --lora-targets and --lora-dropout need --lora-r (the adapter's rank).");
        return null;
    }
    if (rank < 1) throw new ArgumentException($"--lora-r {rank} must be at least 1.");
    var targets = r.GetValue(tLoraTargets) ?? [];
    if (targets.Length == 0) throw new ArgumentException("--lora-r needs --lora-targets: the linear layers to adapt (e.g. c_attn for GPT-2).");
    return new Optimum.Onnx.Lora.LoraConfig
    {
        R = rank, LoraAlpha = r.GetValue(tLoraAlpha) ?? 8, LoraDropout = r.GetValue(tLoraDropout) ?? 0, TargetModules = targets,
    };
}

// train-mlp: the first demo, kept as a shorthand: the digits MLP through the same trainer, by epochs, with SGD + momentum.
var mModel = new Option<string>("--model") { Description = "MLP model folder.", DefaultValueFactory = _ => CliPaths.Bundled("models/mlp-digits") };
var mData = new Option<string>("--data") { Description = "Digits CSV (gzip or plain: 64 pixels 0..16, then the label).", DefaultValueFactory = _ => CliPaths.Bundled("samples/data/digits.csv.gz") };
var mOut = new Option<string>("--out") { Description = "Output folder: metrics.jsonl, loss.png, final/.", DefaultValueFactory = _ => "out/mlp-digits" };
var mEpochs = new Option<int>("--epochs") { Description = "Passes over the training split (80% of the digits).", DefaultValueFactory = _ => 20 };
var mBatch = new Option<int>("--batch-size") { Description = "Examples per step.", DefaultValueFactory = _ => 32 };
var mLr = new Option<double>("--lr") { Description = "Learning rate.", DefaultValueFactory = _ => 0.05 };
var mMomentum = new Option<double>("--momentum") { Description = "SGD momentum.", DefaultValueFactory = _ => 0.9 };
var mSeed = new Option<int>("--seed") { Description = "Initialisation and shuffling seed.", DefaultValueFactory = _ => 0 };
var mOverwrite = new Option<bool>("--overwrite") { Description = "Start over in an --out that holds an earlier run (its checkpoints/, metrics.jsonl, loss.png, final/ and hf/ are deleted); without it such a folder is refused." };
var trainMlp = new Command("train-mlp", "Train the digits MLP (train --model models/mlp-digits by epochs, SGD with momentum, 20% held out).")
{
    mModel, mData, mOut, mEpochs, mBatch, mLr, mMomentum, mSeed, mOverwrite,
};
trainMlp.SetAction(r => ExpectedErrors.Report(() =>
{
    const double Held = 0.2;
    CliPaths.OutputFolder(r.GetValue(mOut)!, "--out");
    int all = Digits.Load(r.GetValue(mData)!).Count, train = all - (int)Math.Round(all * Held);                    // DigitsData's split
    int perEpoch = Math.Max(1, train / Math.Max(1, r.GetValue(mBatch)));
    var o = new TrainerOptions
    {
        ModelDir = r.GetValue(mModel)!, OutputDir = r.GetValue(mOut)!, Steps = (long)r.GetValue(mEpochs) * perEpoch, BatchSize = r.GetValue(mBatch), Lr = r.GetValue(mLr),
        Warmup = 0, Schedule = ScheduleKind.Constant, ClipNorm = 0, EvalEvery = perEpoch, EvalSamples = 0, SaveEvery = 0, Seed = r.GetValue(mSeed),
        Optimizer = new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = r.GetValue(mMomentum), WeightDecay = 0 }, Overwrite = r.GetValue(mOverwrite),
    };
    return TrainCommand.Run(new TrainingJobOptions(o, [r.GetValue(mData)!], ValidationFraction: Held)).Interrupted ? 130 : 0;
}));
root.Subcommands.Add(trainMlp);

// generate: text from a model folder with weights.
var gModel = new Option<string>("--model") { Description = "Model folder with inference.onnx and model.safetensors.", Required = true };
var gPrompt = new Option<string>("--prompt") { Description = "Text to continue.", Required = true };
var gMax = new Option<int>("--max-new-tokens") { Description = "Tokens to add.", DefaultValueFactory = _ => 40 };
var gTemp = new Option<double>("--temperature") { Description = "0 = greedy.", DefaultValueFactory = _ => 0.8 };
var gTopK = new Option<int>("--top-k") { Description = "Sample among the k most likely (0 = all).", DefaultValueFactory = _ => 40 };
var gTopP = new Option<double>("--top-p") { Description = "Nucleus sampling mass.", DefaultValueFactory = _ => 1.0 };
var gRep = new Option<double>("--repetition-penalty") { Description = "HF repetition penalty (1 = none).", DefaultValueFactory = _ => 1.0 };
var gBeams = new Option<int>("--num-beams") { Description = "Beam search with this many beams (1 = none).", DefaultValueFactory = _ => 1 };
var gLenPen = new Option<double>("--length-penalty") { Description = "Beam score = sum log p / length^penalty.", DefaultValueFactory = _ => 1.0 };
var gEarly = new Option<bool>("--early-stopping") { Description = "Stop beam search when num-beams hypotheses are finished." };
var gStop = new Option<string[]>("--stop") { Description = "Stop strings (not included in the output).", AllowMultipleArgumentsPerToken = true };
var gSeed = new Option<int>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 0 };
var gStream = new Option<bool>("--stream") { Description = "Print text as it is generated." };
var gDevice = DeviceOption.Create();
var generate = new Command("generate", "Text from a language model folder: continue a prompt (gpt2) or transduce it (t5); greedy, sampling, beam search, streaming.")
{
    gModel, gPrompt, gMax, gTemp, gTopK, gTopP, gRep, gBeams, gLenPen, gEarly, gStop, gSeed, gStream, gDevice,
};
generate.SetAction(r => ExpectedErrors.Report(() =>
{
    var dir = r.GetValue(gModel)!;
    using var model = ModelKinds.Load(dir, new SessionSettings { Device = DeviceOption.Parse(r, gDevice) });
    var gen = model.Generator ?? throw new ArgumentException($"'{dir}' is a {Optimum.Inference.ModelTaskNames.WireName(model.Task)} model; generate needs a language model (gpt2 or t5).");
    var prompt = r.GetValue(gPrompt)!;
    var o = new Optimum.Inference.GenerationOptions
    {
        MaxNewTokens = r.GetValue(gMax), Temperature = r.GetValue(gTemp), TopK = r.GetValue(gTopK), TopP = r.GetValue(gTopP),
        RepetitionPenalty = r.GetValue(gRep), NumBeams = r.GetValue(gBeams), LengthPenalty = r.GetValue(gLenPen),
        EarlyStopping = r.GetValue(gEarly), Seed = r.GetValue(gSeed),
    };
    var stop = r.GetValue(gStop) ?? [];
    // Everything is checked before the prompt is echoed: an error is the only output.
    o.Validate(key => "--" + key.Replace('_', '-'));
    if (gen.CheckLength(gen.Encode(prompt).Count, o.MaxNewTokens, "--max-new-tokens") is { } tooLong) throw new ArgumentException(tooLong);
    var echo = gen.Task == Optimum.Inference.ModelTask.Seq2Seq ? $"{prompt} -> " : prompt;
    if (r.GetValue(gStream))
    {
        Console.Write(echo);
        var stream = gen.StreamAsync(prompt, o, stop).GetAsyncEnumerator();
        while (stream.MoveNextAsync().AsTask().GetAwaiter().GetResult()) Console.Write(stream.Current);
        Console.WriteLine();
    }
    else Console.WriteLine(echo + gen.Complete(prompt, o, stop).Text);       // nothing printed when the model fails
    return 0;
}));
root.Subcommands.Add(generate);

// forecast: probabilistic forecasts (and a backtest) from a trained time-series model folder.
var fModel = new Option<string>("--model") { Description = "TimeSeriesTransformer or Informer model folder with weights.", Required = true };
var fData = new Option<string>("--data") { Description = "Series file: .csv (series,month,value) or vega's .json.", Required = true };
var fOut = new Option<string>("--out") { Description = "Output folder: forecasts.csv and forecasts/*.png.", DefaultValueFactory = _ => "out/forecast" };
var fHorizon = new Option<int?>("--horizon") { Description = "Steps ahead (default: the model's prediction_length, or --backtest)." };
var fSamples = new Option<int>("--samples") { Description = "Sample paths per series.", DefaultValueFactory = _ => 100 };
var fQuantiles = new Option<double[]>("--quantiles") { Description = "Quantile levels to report.", AllowMultipleArgumentsPerToken = true, DefaultValueFactory = _ => [0.1, 0.5, 0.9] };
var fSeed = new Option<long>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 0 };
var fBacktest = new Option<int>("--backtest") { Description = "Hold back the last K points, forecast them and score against seasonal naive (0 = forecast the future).", DefaultValueFactory = _ => 0 };
var fSeason = new Option<int>("--season") { Description = "Season length for MASE and seasonal naive.", DefaultValueFactory = _ => 12 };
var fDevice = DeviceOption.Create();
var forecast = new Command("forecast", "Probabilistic forecasts of every series in a file: forecasts.csv, a PNG per series, optionally a backtest.")
{
    fModel, fData, fOut, fHorizon, fSamples, fQuantiles, fSeed, fBacktest, fSeason, fDevice,
};
forecast.SetAction(r => ExpectedErrors.Report(() =>
{
    var device = DeviceOption.Parse(r, fDevice);        // before --out is made
    Optimum.Inference.Forecasting.SeriesForecast.Run(new Optimum.Inference.Forecasting.SeriesForecastOptions
    {
        ModelDir = r.GetValue(fModel)!, Data = r.GetValue(fData)!, OutDir = CliPaths.OutputFolder(r.GetValue(fOut)!, "--out"), Horizon = r.GetValue(fHorizon), Samples = r.GetValue(fSamples),
        Quantiles = r.GetValue(fQuantiles)!, Seed = r.GetValue(fSeed), Backtest = r.GetValue(fBacktest), Season = r.GetValue(fSeason),
        Settings = new SessionSettings { Device = device },
    }, Console.Out);
    return 0;
}));
root.Subcommands.Add(forecast);

// generate-images: samples from a diffusion UNet folder (src/Optimum.Cli/GenerateImagesCommand.cs).
root.Subcommands.Add(GenerateImagesCommand.Create());

// serve: the completions, forecasting and image generation microservice.
var sModels = new Option<string[]>("--model") { Description = "Model folder(s) to serve (name=path to rename).", Required = true, AllowMultipleArgumentsPerToken = true };
var sAdapters = new Option<string[]>("--adapter") { Description = "LoRA adapter (PEFT folder: adapter_config.json, adapter_model.safetensors) to serve over a --model, as name=folder@base; repeatable. The base's weights are loaded once for it and all its adapters.", AllowMultipleArgumentsPerToken = true };
var sUrls = new Option<string>("--urls") { Description = "Where to listen.", DefaultValueFactory = _ => "http://127.0.0.1:5000" };
var sKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer <key>' on /v1 (or set OPTIMUM__APIKEY)." };
var sConc = new Option<int>("--max-concurrent") { Description = "Completions generated at once (with continuous batching: rows of a language model's batch).", DefaultValueFactory = _ => 2 };
var sNoBatching = new Option<bool>("--no-batching") { Description = "Decode each completion alone instead of batching concurrent completions at every step." };
var sQueue = new Option<int>("--queue") { Description = "Completions waiting for a slot before 429.", DefaultValueFactory = _ => 16 };
var sTimeout = new Option<double>("--timeout") { Description = "Seconds per completion before 504.", DefaultValueFactory = _ => 60 };
var sThreads = new Option<int>("--threads") { Description = "ONNX Runtime threads per model.", DefaultValueFactory = _ => Environment.ProcessorCount };
var sDevice = DeviceOption.Create();
var serve = new Command("serve", "Serve models over HTTP: OpenAI-style /v1/completions (with SSE streaming) for language models, /v1/forecast for time-series models, /v1/images/generations for diffusion UNets, /v1/models, /healthz, /metrics.")
{
    sModels, sAdapters, sUrls, sKey, sConc, sQueue, sTimeout, sThreads, sNoBatching, sDevice,
};
serve.SetAction(r => ExpectedErrors.Report(() =>
{
    var models = r.GetValue(sModels)!;
    var adapters = (r.GetValue(sAdapters) ?? []).Select(a =>
    {
        try { return Optimum.Server.ServedAdapter.Parse(a); }
        catch (FormatException e) { throw new ArgumentException($"--adapter: {e.Message}", e); }
    }).ToArray();
    // The flags are checked here, by their names (the server's own check names its configuration keys).
    if (r.GetValue(sConc) < 1) throw new ArgumentException($"--max-concurrent {r.GetValue(sConc)} must be at least 1.");
    if (r.GetValue(sQueue) < 0) throw new ArgumentException($"--queue {r.GetValue(sQueue)} must be >= 0.");
    if (!(r.GetValue(sTimeout) > 0 && double.IsFinite(r.GetValue(sTimeout)))) throw new ArgumentException($"--timeout {r.GetValue(sTimeout)} must be a positive number of seconds.");
    // Only a --device given on the command line overrides the configured Optimum:Device (appsettings.json, OPTIMUM__DEVICE).
    var device = r.GetResult(sDevice) is { Implicit: false } ? DeviceOption.Parse(r, sDevice) : (ExecutionDevice?)null;
    if (r.GetValue(sThreads) < 0) throw new ArgumentException($"--threads {r.GetValue(sThreads)} must be >= 0 (0 lets ONNX Runtime choose).");
    // The command's options over the configuration section "Optimum" (appsettings.json, OPTIMUM__* variables), which
    // keeps supplying the rest (body and token limits, an API key when --api-key is not given).
    var app = Optimum.Server.OptimumServer.Build(["--urls", r.GetValue(sUrls)!], b =>
    {
        // A start-up failure (port in use, a bad --urls) is reported below in one line; the host would also log it with its stack.
        Microsoft.Extensions.Logging.FilterLoggingBuilderExtensions.AddFilter(b.Logging, "Microsoft.Extensions.Hosting.Internal.Host", Microsoft.Extensions.Logging.LogLevel.None);
        Optimum.Server.OptimumServer.AddOptimum(b.Services, o =>
        {
            o.Models = [.. models.Select(Optimum.Server.ServedModel.Parse)];
            o.Adapters = [.. adapters];
            (o.MaxConcurrent, o.QueueLimit, o.RequestTimeoutSeconds, o.Threads) = (r.GetValue(sConc), r.GetValue(sQueue), r.GetValue(sTimeout), r.GetValue(sThreads));
            if (device is { } d) o.Device = d.ToString();
            if (r.GetValue(sNoBatching)) o.ContinuousBatching = false;
            if (r.GetValue(sKey) is { Length: > 0 } key) o.ApiKey = key;
        });
    });
    // Started before "serving" is printed: a failure to bind says so and exits 1.
    try { app.StartAsync().GetAwaiter().GetResult(); }
    catch (Exception e) when (e is FormatException or OverflowException or ArgumentOutOfRangeException)
    {
        throw new ArgumentException($"--urls '{r.GetValue(sUrls)}' is not a usable address ({e.Message}).", e);
    }
    Console.WriteLine($"serving {string.Join(", ", models.Concat(adapters.Select(a => $"{a.Name} (adapter of {a.Base})")))} on {string.Join(", ", app.Urls)} (Ctrl-C stops after in-flight requests)");
    Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.WaitForShutdownAsync(app).GetAwaiter().GetResult();
    return 0;
}));
root.Subcommands.Add(serve);

// preprocess: tokenize a corpus ahead into a memory-mapped dataset (src/Optimum.Cli/PreprocessCommand.cs).
root.Subcommands.Add(PreprocessCommand.Create());

// bench: performance measurements (src/Optimum.Cli/Bench/).
root.Subcommands.Add(BenchCommands.Create());

// mpi-check: verify the MPI setup (run under mpirun).
var mcChunk = new Option<int>("--chunk") { Description = "Elements per MPI call (small values exercise the splitting of large counts).", DefaultValueFactory = _ => 333 };
var mpiCheck = new Command("mpi-check", "Run every collective under mpirun and check the results on each rank.") { mcChunk };
mpiCheck.SetAction(r =>
{
    if (r.GetValue(mcChunk) < 1) { Console.Error.WriteLine($"error: --chunk {r.GetValue(mcChunk)} must be at least 1 element per MPI call."); return 1; }
    using var c = new Optimum.Distributed.MpiCommunicator();
    return MpiCheck.Run(c, r.GetValue(mcChunk));
});
root.Subcommands.Add(mpiCheck);

// inspect: what an ONNX file holds.
var file = new Argument<string>("file") { Description = "An .onnx model." };
var inspect = new Command("inspect", "Print an ONNX model's inputs, outputs and op counts.") { file };
inspect.SetAction(r => ExpectedErrors.Report(() =>
{
    var g = ModelReader.Load(r.GetValue(file)!);
    Console.WriteLine($"graph '{g.Name}': {g.Nodes.Count} nodes, {g.Constants.Count} initializers");
    foreach (var i in g.Inputs) Console.WriteLine($"  input  {(i.Kind == ValueKind.Parameter ? "param" : "data "),-5} {i}");
    foreach (var o in g.Outputs) Console.WriteLine($"  output       {o}");
    foreach (var grp in g.Nodes.GroupBy(n => n.OpType).OrderByDescending(x => x.Count()).ThenBy(x => x.Key, StringComparer.Ordinal))
        Console.WriteLine($"  {grp.Count(),5} x {grp.Key}");
    return 0;
}));
root.Subcommands.Add(inspect);

// Parse errors in one line each, with types in words ("expected type 'System.Int64'" meant an integer).
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // The whole command path ("bench train"), not only the last name.
    var path = new List<string>();
    for (var c = parsed.CommandResult; c is not null && c.Command != root; c = c.Parent as System.CommandLine.Parsing.CommandResult) path.Insert(0, c.Command.Name);
    var usage = string.Join(" ", ["optimum-net", .. path, "--help"]);
    foreach (var e in parsed.Errors) Console.Error.WriteLine($"error: {CliPaths.Friendly(e.Message).TrimEnd('.')} ({usage} lists the options).");
    return 1;
}
return parsed.Invoke();
