using Optimum.Core;
using System.CommandLine;
using Optimum.Onnx.Lora;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench ...</c>: performance measurements (not tests). Every option a bench offers is
/// used by it; a bench that times steps takes --warmup and --steps.
/// </summary>
public static class BenchCommands
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "One JSON object per measurement." };
        var threads = new Option<int>("--threads") { Description = "Intra-op threads.", DefaultValueFactory = _ => 2 };
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps, run before the measured ones and not timed.", DefaultValueFactory = _ => 2 };
        var profile = new Option<bool>("--profile") { Description = "Also print ORT's profile by op type." };
        var layers = new Option<int>("--layers") { Description = "GPT-2 blocks (n_layer) of the bench model.", DefaultValueFactory = _ => 6 };
        var width = new Option<int>("--width") { Description = "Hidden size (n_embd).", DefaultValueFactory = _ => 384 };
        var heads = new Option<int>("--heads") { Description = "Attention heads (n_head; must divide --width).", DefaultValueFactory = _ => 6 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (training) or context (generation).", DefaultValueFactory = _ => 256 };
        var vocab = new Option<int>("--vocab") { Description = "Vocabulary size (GPT-2's BPE: 50257).", DefaultValueFactory = _ => 50257 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 8 };
        var device = DeviceOption.Create();
        Option<int> Steps(int defaultSteps, string what) =>
            new("--steps") { Description = $"Measured steps (after --warmup ones); a step is {what}.", DefaultValueFactory = _ => defaultSteps };
        BenchRun Common(ParseResult r, Option<int> steps, bool profiles = false) =>
            new(r.GetValue(threads), r.GetValue(warmup), r.GetValue(steps), r.GetValue(json), profiles && r.GetValue(profile)) { Device = DeviceOption.Parse(r, device) };
        // Generation and serving take no --seq or --batch: their lengths come from the prompt and the tokens asked for.
        Gpt2Size Gpt2(ParseResult r, bool trains = true) => trains
            ? new(r.GetValue(layers), r.GetValue(width), r.GetValue(heads), r.GetValue(seq), r.GetValue(vocab), r.GetValue(batch))
            : new(r.GetValue(layers), r.GetValue(width), r.GetValue(heads), Vocab: r.GetValue(vocab));

        // bench train: throughput against ORT's MatMul peak (and optionally TorchSharp).
        var trainSteps = Steps(5, "one batch's forward, backward and AdamW update");
        var torch = new Option<bool>("--torch") { Description = "Also run the TorchSharp reference (../shared/tools/torch-ref/run.sh) and print the ratios." };
        var torchPath = new Option<string>("--torch-ref") { Description = "Path of the reference's run.sh.", DefaultValueFactory = _ => CliPaths.Bundled("../shared/tools/torch-ref/run.sh") };
        var arena = new Option<Arena?>("--arena") { Description = "ORT's CPU arena for the training graph: Shared (the default: one for the process, grown by what is asked for), PerSession (ORT's own, per session) or Off." };
        var optimizerGraph = new Option<bool>("--optimizer-graph") { Description = "Step AdamW as an ONNX graph on --device instead of the fused C# update (optimizer_ms compares them)." };
        var pattern = new Option<bool?>("--memory-pattern") { Description = "ORT's memory pattern for the training graph (off by default for training: one block for the whole plan costs 2 GB on GPT-2 124M)." };
        var trainPrecision = new Option<string>("--precision") { Description = "Training precisions to measure in turn, e.g. fp32,tf32,bf16,fp16 (bf16 needs --device cuda; on the CPU fp16 products run in float32, see README).", DefaultValueFactory = _ => "fp32" };
        var stateOnDevice = new Option<bool>("--state-on-device") { Description = "Keep parameters, gradients and AdamW state in --device's memory, the update as an ONNX graph there (the default for train --device cuda)." };
        var loraR = new Option<int?>("--lora-r") { Description = "Also measure LoRA of this rank (first; then full fine-tuning of the same model): trainable parameters, optimizer state, step time, peak memory of each." };
        var loraAlpha = new Option<double?>("--lora-alpha") { Description = "LoRA alpha (scaling alpha / r; default r)." };
        var loraTargets = new Option<string[]>("--lora-targets") { Description = "Linear layers LoRA adapts (PEFT's target_modules; default c_attn).", AllowMultipleArgumentsPerToken = true };
        var train = new Command("train", "Training throughput and peak memory of a GPT-2 (default 6 layers, 384 wide, 6 heads, seq 256, vocab 50257, batch 8, 2 threads).")
        {
            json, threads, warmup, trainSteps, layers, width, heads, seq, vocab, batch, profile, torch, torchPath, arena, pattern, device, optimizerGraph, loraR, loraAlpha, loraTargets,
            trainPrecision, stateOnDevice,
        };
        train.SetAction(r => ExpectedErrors.Report(() =>
        {
            var rank = r.GetValue(loraR);
            if (rank is null && (r.GetValue(loraAlpha) is not null || r.GetValue(loraTargets) is { Length: > 0 }))
                throw new ArgumentException("--lora-alpha and --lora-targets need --lora-r.");
            LoraConfig? lora = null;
            if (rank is { } rr)
            {
                if (rr < 1) throw new ArgumentException($"--lora-r must be at least 1, got {rr}.");
                lora = new LoraConfig { R = rr, LoraAlpha = r.GetValue(loraAlpha) ?? rr, TargetModules = r.GetValue(loraTargets) is { Length: > 0 } ts ? ts : ["c_attn"] };
                lora.Validate();
            }
            return BenchTrain.Run(Common(r, trainSteps, profiles: true) with { MemoryArena = r.GetValue(arena), MemoryPattern = r.GetValue(pattern) }, Gpt2(r),
                r.GetValue(torch) ? r.GetValue(torchPath) : null, Console.Out, r.GetValue(optimizerGraph), lora,
                r.GetValue(trainPrecision)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(p => EnumNames.Parse<TrainingPrecision>(p, "--precision")).ToArray(),
                r.GetValue(stateOnDevice));
        }));

        // bench zero: ZeRO-1 at one and two ranks.
        var zeroSteps = Steps(5, "one ZeRO-1 update of the global batch");
        var worker = new Option<bool>("--worker") { Description = "Internal: one measurement, run by bench zero under mpirun.", Hidden = true };
        var zero = new Command("zero", "ZeRO-1 step time at N=1 and N=2 ranks, communication share and optimizer state per rank.")
        {
            json, threads, warmup, zeroSteps, layers, width, heads, seq, vocab, batch, worker, device,
        };
        zero.SetAction(r => ExpectedErrors.Report(() => BenchZero.Run(Common(r, zeroSteps), Gpt2(r), r.GetValue(worker), Console.Out)));

        // bench generate: KV cache against re-running the sequence.
        var generateSteps = Steps(1, "one generation of --new-tokens tokens, with and without the cache");
        var prompt = new Option<int>("--prompt") { Description = "Prompt tokens.", DefaultValueFactory = _ => 32 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Tokens to generate.", DefaultValueFactory = _ => 256 };
        var genai = new Option<bool>("--genai") { Description = "Also run onnxruntime-genai on the same exported model (../shared/tools/genai-ref/run.sh) and print the ratio." };
        var genaiPath = new Option<string>("--genai-ref") { Description = "Path of the onnxruntime-genai reference's run.sh.", DefaultValueFactory = _ => CliPaths.Bundled("../shared/tools/genai-ref/run.sh") };
        var precision = new Option<string?>("--precision") { Description = "Compare weight precisions on the same model in one run instead: a list of fp32, int8 (DynamicQuantizeMatMul), int8-nbits (MatMulNBits, bits 8), int4 (e.g. fp32,int8,int4); KV-cache tokens/s, time to first token, model bytes and peak RSS of each." };
        var precisionFolder = new Option<string?>("--precision-folder") { Description = "Internal: one precision's measurement on this folder, run by bench generate --precision.", Hidden = true };
        var blockSize = new Option<int>("--block-size") { Description = "With --precision: MatMulNBits block size (int8-nbits, int4).", DefaultValueFactory = _ => 32 };
        var generate = new Command("generate", "Batch-1 greedy generation tokens/s with and without the KV cache, time to first token, and the memory-bandwidth bound measured in the same run.")
        {
            json, threads, warmup, generateSteps, layers, width, heads, vocab, prompt, newTokens, profile, genai, genaiPath, device, precision, blockSize, precisionFolder,
        };
        generate.SetAction(r => ExpectedErrors.Report(() => r.GetValue(precisionFolder) is { } folder
            ? BenchPrecision.Worker(Common(r, generateSteps), folder, r.GetValue(vocab), r.GetValue(prompt), r.GetValue(newTokens), Console.Out)
            : r.GetValue(precision) is { } ps
            ? BenchPrecision.Run(Common(r, generateSteps), Gpt2(r, trains: false), r.GetValue(prompt), r.GetValue(newTokens), BenchPrecision.Parse(ps), r.GetValue(blockSize), Console.Out)
            : BenchGenerate.Run(Common(r, generateSteps, profiles: true), Gpt2(r, trains: false),
                r.GetValue(prompt), r.GetValue(newTokens), r.GetValue(genai) ? r.GetValue(genaiPath) : null, Console.Out)));

        // bench serve: the HTTP service under concurrent load (the unit timed is a request: no --steps).
        var clients = new Option<int>("--clients") { Description = "Concurrent clients.", DefaultValueFactory = _ => 4 };
        var requests = new Option<int>("--requests") { Description = "Requests per client.", DefaultValueFactory = _ => 10 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens per completion.", DefaultValueFactory = _ => 32 };
        var serveWarmup = new Option<int>("--warmup") { Description = "Warm-up requests, sent one at a time before the clients start.", DefaultValueFactory = _ => 2 };
        var noBatching = new Option<bool>("--no-batching") { Description = "Serve each completion alone (2 slots, half the threads each) instead of continuous batching (16 rows, all threads)." };
        var serveT5 = new Option<bool>("--t5") { Description = "Serve a T5 (--layers in each stack, the prompt as its source) instead of a GPT-2." };
        var serveAdapters = new Option<int?>("--adapters") { Description = "Instead: resident memory and tokens/s of one process serving the GPT-2 plus N LoRA adapters over it (r 8, c_attn) against one serving the N adapters merged into N models, each layout in a process of its own." };
        var serveLayout = new Option<string?>("--layout") { Description = "Internal: one layout of --adapters, run as a worker.", Hidden = true };
        var serve = new Command("serve", "Service latency (p50/p99), time to first token and throughput under a fixed concurrent load on loopback; with --adapters N, memory of a base + N LoRA adapters against N merged models.")
        {
            json, threads, serveWarmup, layers, width, heads, vocab, clients, requests, maxTokens, noBatching, serveT5, device, serveAdapters, serveLayout,
        };
        serve.SetAction(r => ExpectedErrors.Report(() =>
        {
            var run = new BenchRun(r.GetValue(threads), r.GetValue(serveWarmup), 0, r.GetValue(json)) { Device = DeviceOption.Parse(r, device) };
            if (r.GetValue(serveAdapters) is { } n)
            {
                if (r.GetValue(serveT5) || r.GetValue(noBatching)) throw new ArgumentException("--adapters serves GPT-2 adapters with continuous batching: it takes neither --t5 nor --no-batching.");
                return BenchServeAdapters.Run(run, Gpt2(r, trains: false), n, r.GetValue(clients), r.GetValue(requests), r.GetValue(maxTokens), Console.Out, r.GetValue(serveLayout));
            }
            if (r.GetValue(serveLayout) is not null) throw new ArgumentException("--layout is only for bench serve --adapters' workers.");
            return BenchServe.Run(run, Gpt2(r, trains: false), r.GetValue(clients), r.GetValue(requests), r.GetValue(maxTokens), Console.Out, !r.GetValue(noBatching), r.GetValue(serveT5));
        }));

        // bench soak: the service at its queue limit for a while, clients hanging up at random; memory at the start and end.
        var soakSeconds = new Option<double>("--seconds") { Description = "Seconds of the measured run.", DefaultValueFactory = _ => 300 };
        var soakWarmup = new Option<double>("--warmup") { Description = "Seconds of the same load first, not counted (memory at the start is taken after it).", DefaultValueFactory = _ => 10 };
        var soakClients = new Option<int>("--clients") { Description = "Concurrent clients (more than --max-concurrent + --queue keeps the service at its queue limit).", DefaultValueFactory = _ => 8 };
        var soakSlots = new Option<int>("--max-concurrent") { Description = "The service's generation slots.", DefaultValueFactory = _ => 2 };
        var soakQueue = new Option<int>("--queue") { Description = "The service's queue places.", DefaultValueFactory = _ => 4 };
        var soakTokens = new Option<int>("--max-tokens") { Description = "Most tokens per completion (each request draws 1 to this).", DefaultValueFactory = _ => 32 };
        var soakDisconnect = new Option<double>("--disconnect") { Description = "Share of requests the client hangs up on (mid-stream, queued or mid-answer).", DefaultValueFactory = _ => 0.3 };
        var soakStream = new Option<double>("--stream") { Description = "Share of requests that stream (SSE).", DefaultValueFactory = _ => 0.8 };
        var soak = new Command("soak", "The service at its queue limit for --seconds with streaming clients that hang up at random: requests by status, clean stream ends, disconnects, RSS and managed heap at the start and end.")
        {
            json, threads, soakWarmup, soakSeconds, layers, width, heads, vocab, soakClients, soakSlots, soakQueue, soakTokens, soakDisconnect, soakStream, device,
        };
        soak.SetAction(r => ExpectedErrors.Report(() => BenchSoak.Run(new BenchRun(r.GetValue(threads), 0, 0, r.GetValue(json)) { Device = DeviceOption.Parse(r, device) }, Gpt2(r, trains: false),
            new SoakLoad(r.GetValue(soakSeconds), r.GetValue(soakWarmup), r.GetValue(soakClients), r.GetValue(soakSlots), r.GetValue(soakQueue), r.GetValue(soakTokens),
                r.GetValue(soakDisconnect), r.GetValue(soakStream)), Console.Out)));

        // bench t5: encoder-decoder training and generation.
        var t5Steps = Steps(5, "one batch's forward, backward and AdamW update, then separately one generation of --target tokens");
        var source = new Option<int>("--source") { Description = "Source tokens.", DefaultValueFactory = _ => 128 };
        var target = new Option<int>("--target") { Description = "Target tokens.", DefaultValueFactory = _ => 64 };
        var t5Vocab = new Option<int>("--vocab") { Description = "T5 vocabulary size (t5-small's: 32128).", DefaultValueFactory = _ => 32128 };
        var t5 = new Command("t5", "T5 training throughput (default 6+6 layers, d_model 384, 128/64 tokens) and generation tokens/s.")
        {
            json, threads, warmup, t5Steps, layers, width, heads, batch, source, target, t5Vocab, profile, torch, torchPath, device,
        };
        t5.SetAction(r => ExpectedErrors.Report(() => BenchT5.Run(Common(r, t5Steps, profiles: true), new T5Size(r.GetValue(layers), r.GetValue(width), r.GetValue(heads),
            r.GetValue(batch), r.GetValue(source), r.GetValue(target), r.GetValue(t5Vocab)), r.GetValue(torch) ? r.GetValue(torchPath) : null, Console.Out)));

        // bench forecast: the time-series models at the unemployment sample's size.
        var forecastSteps = Steps(30, "one batch of windows' forward, backward and AdamW update");
        var forecastModel = new Option<string>("--model") { Description = "informer, tst or both.", DefaultValueFactory = _ => "both" };
        var forecastBatch = new Option<int>("--batch") { Description = "Training windows per step.", DefaultValueFactory = _ => 64 };
        var samples = new Option<int>("--samples") { Description = "Sample paths per forecast.", DefaultValueFactory = _ => 100 };
        var forecast = new Command("forecast", "Informer / Time Series Transformer training windows/s and forecast latency (ms per series for 100 paths).")
        {
            json, threads, warmup, forecastSteps, forecastModel, forecastBatch, samples, profile, device,
        };
        forecast.SetAction(r => ExpectedErrors.Report(() => BenchForecast.Run(Common(r, forecastSteps, profiles: true), r.GetValue(forecastModel)!,
            r.GetValue(forecastBatch), r.GetValue(samples), Console.Out)));

        // bench unet: the PyTorch reference's diffusion UNet, training through the Trainer and DDIM sampling.
        var unetSteps = Steps(10, "one Trainer update of --batch images; sampling measures one whole trajectory of --sample-steps UNet runs");
        var unetBatch = new Option<int>("--batch") { Description = "Training images per step.", DefaultValueFactory = _ => 32 };
        var sampleSteps = new Option<int>("--sample-steps") { Description = "DDIM steps of the sampling trajectory.", DefaultValueFactory = _ => 50 };
        var sampleBatch = new Option<int>("--sample-batch") { Description = "Images per UNet run when sampling.", DefaultValueFactory = _ => 16 };
        var unet = new Command("unet", "Diffusion UNet (the PyTorch reference's: 32x32x1, [32, 64, 64], 1.7M parameters) training images/s and DDIM sampling UNet evaluations/s.")
        {
            json, threads, warmup, unetSteps, unetBatch, sampleSteps, sampleBatch, profile, torch, torchPath, device,
        };
        unet.SetAction(r => ExpectedErrors.Report(() => BenchUnet.Run(Common(r, unetSteps, profiles: true),
            new UnetBenchSize(r.GetValue(unetBatch), r.GetValue(sampleSteps), r.GetValue(sampleBatch)), r.GetValue(torch) ? r.GetValue(torchPath) : null, Console.Out)));

        // bench data: preprocessing throughput, and training from a large memory-mapped dataset against Moby-Dick.
        var dataSteps = Steps(5, "one training batch of --batch windows of --seq tokens from the data");
        var dataSize = new Option<int>("--size-mb") { Description = "Size of the large dataset's .bin in MB (written to a temporary folder, deleted after).", DefaultValueFactory = _ => 2048 };
        var dataText = new Option<int>("--tokenize-mb") { Description = "MB of text tokenized to measure preprocessing (the large dataset repeats those documents).", DefaultValueFactory = _ => 32 };
        var dataWorkers = new Option<int>("--workers") { Description = "Preprocessing threads.", DefaultValueFactory = _ => 2 };
        var dataSeq = new Option<int>("--seq") { Description = "Tokens per training window.", DefaultValueFactory = _ => 128 };
        var dataModel = new Option<string>("--model") { Description = "GPT-2 model folder trained on.", DefaultValueFactory = _ => CliPaths.Bundled("models/gpt2-mini") };
        var dataText0 = new Option<string>("--text") { Description = "The text the corpora are made of.", DefaultValueFactory = _ => CliPaths.Bundled("samples/data/moby-dick.txt") };
        var dataKeep = new Option<bool>("--keep") { Description = "Keep the temporary folder." };
        var data = new Command("data", "Preprocessing MB/s (share in the tokenizer), then tokens/s and peak RSS of a short training on a --size-mb memory-mapped dataset vs Moby-Dick (mapped and in memory).")
        {
            json, threads, warmup, dataSteps, batch, dataSeq, dataSize, dataText, dataWorkers, dataModel, dataText0, dataKeep, device,
        };
        data.SetAction(r => ExpectedErrors.Report(() =>
        {
            if (r.GetValue(dataSize) < 1 || r.GetValue(dataText) < 1 || r.GetValue(dataWorkers) < 1)
                throw new ArgumentException($"--size-mb {r.GetValue(dataSize)}, --tokenize-mb {r.GetValue(dataText)} and --workers {r.GetValue(dataWorkers)} must be at least 1.");
            return BenchData.Run(Common(r, dataSteps), new DataBenchSize(r.GetValue(dataSize), r.GetValue(dataText), r.GetValue(dataWorkers), r.GetValue(batch), r.GetValue(dataSeq), r.GetValue(dataKeep)),
                r.GetValue(dataModel)!, r.GetValue(dataText0)!, Console.Out);
        }));

        return new Command("bench", "Performance measurements (not tests).") { train, zero, generate, serve, soak, t5, forecast, unet, data };
    }
}
