using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// --device on every command that runs a model. This machine's build has ONNX Runtime's CPU package, so CUDA must be
/// refused with one line naming what is missing and how to build with it; a build with CUDA skips those.
/// </summary>
public sealed class DeviceTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static bool BuildHasCuda => OrtEnv.Instance().GetAvailableProviders().Contains(ExecutionDevice.CudaProvider);

    private string Never => Path.Combine(_dir, "never-" + Guid.NewGuid().ToString("N"));

    private string CommandWith(string command, string device) => command switch
    {
        "train" => $"train --model {Repo.Path("models", "mlp-digits")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {Never} --steps 2 --device {device}",
        "generate" => $"generate --model {Repo.Path("models", "gpt2-mini")} --prompt hello --device {device}",
        "generate-images" => $"generate-images --model {Repo.Path("models", "gpt2-mini")} --out {Never} --device {device}",
        "forecast" => $"forecast --model {Repo.Path("models", "gpt2-mini")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {Never} --device {device}",
        "serve" => $"serve --model {Repo.Path("models", "gpt2-mini")} --urls http://127.0.0.1:0 --device {device}",
        "bench train" => $"bench train --layers 1 --width 8 --heads 2 --seq 4 --vocab 11 --batch 1 --steps 1 --warmup 0 --device {device}",
        "bench generate" => $"bench generate --layers 1 --width 8 --heads 2 --vocab 11 --device {device}",
        _ when command.StartsWith("bench ", StringComparison.Ordinal) => $"{command} --device {device}",   // refused before any work
        _ => throw new ArgumentException(command),
    };

    public static TheoryData<string> Commands => ["train", "generate", "generate-images", "forecast", "serve", "bench train", "bench generate"];

    [SkippableTheory]
    [MemberData(nameof(Commands))]
    public void Cuda_OnTheCpuBuild_IsRefusedNamingThePackageToBuildWith(string command)
    {
        Skip.If(BuildHasCuda, "this build of ONNX Runtime has the CUDA provider");
        var (code, stderr) = CliProcess.Run(CommandWith(command, "cuda:1"), output);
        Assert.Equal(1, code);
        Assert.Contains("error: cuda:1: the CUDA execution provider is not in this build of ONNX Runtime (providers: CPUExecutionProvider", stderr);
        Assert.Contains("Build the application with -p:OrtNative=cuda (Microsoft.ML.OnnxRuntime.Gpu.Linux)", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));     // refused before any output folder was made
    }

    /// <summary>serve without --device takes the configured Optimum:Device (here OPTIMUM__DEVICE); before the fix the default cpu overwrote it.</summary>
    [SkippableFact]
    public void Serve_WithoutDevice_UsesTheConfiguredDevice()
    {
        Skip.If(BuildHasCuda, "this build of ONNX Runtime has the CUDA provider");
        var (code, _, stderr) = CliProcess.RunWithOutput($"serve --model {Repo.Path("models", "gpt2-mini")} --urls http://127.0.0.1:0", output,
            new Dictionary<string, string> { ["OPTIMUM__DEVICE"] = "cuda:1" });
        Assert.Equal(1, code);
        Assert.Contains("cuda:1: the CUDA execution provider is not in this build of ONNX Runtime", stderr);
    }

    [Theory]
    [InlineData("train", "tpu")]
    [InlineData("generate", "cuda:-1")]
    [InlineData("generate-images", "cuda:x")]
    [InlineData("forecast", "gpu")]
    [InlineData("serve", "cuda:")]
    [InlineData("bench train", "cuda0")]
    [InlineData("bench zero", "tpu")]
    [InlineData("bench generate", "tpu")]
    [InlineData("bench serve", "tpu")]
    [InlineData("bench soak", "tpu")]
    [InlineData("bench t5", "tpu")]
    [InlineData("bench forecast", "tpu")]
    [InlineData("bench unet", "tpu")]
    [InlineData("bench data", "tpu")]                       // bench data had no --device and crashed on the shared option
    public void BadDeviceNames_AreOneLineErrors(string command, string device)
    {
        var (code, stderr) = CliProcess.Run(CommandWith(command, device), output);
        Assert.Equal(1, code);
        Assert.Contains($"error: --device '{device}' is not a device: expected cpu, cuda or cuda:N with N a device number >= 0.", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    /// <summary>--device cpu is the default spelled out: the same losses; --optimizer-graph steps AdamW as an ONNX graph, to the same numbers.</summary>
    [Fact]
    public void Train_OnTheCpu_AndWithTheOptimizerGraph_GivesTheDefaultRunsLosses()
    {
        string Run(string extra)
        {
            var outDir = Path.Combine(_dir, "run" + extra.Replace(" ", "").Replace("-", ""));
            var (code, _) = CliProcess.Run($"train --model {Repo.Path("models", "mlp-digits")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {outDir} " +
                $"--steps 6 --warmup 2 --batch-size 16 --eval-every 0 --eval-samples 32 --save-every 0 --threads 1 {extra}", output);
            Assert.Equal(0, code);
            return outDir;
        }
        var baseline = Losses(Run(""));
        var cpu = Losses(Run("--device cpu"));
        var graph = Losses(Run("--device cpu --optimizer-graph"));
        Assert.Equal(6, baseline.Length);
        Assert.Equal(baseline, cpu);
        for (int i = 0; i < baseline.Length; i++)
            Assert.True(Math.Abs(graph[i] - baseline[i]) <= 1e-6 * Math.Max(1, Math.Abs(baseline[i])), $"step {i + 1}: optimizer graph loss {graph[i]} vs fused {baseline[i]}");
        Assert.True(baseline[^1] < baseline[0], $"the loss did not fall: {string.Join(", ", baseline)}");
    }

    /// <summary>
    /// --precision: fp16 trains the digits MLP with its products in float16 and a loss scale in every metrics line, to fp32's losses
    /// (on the CPU ONNX Runtime computes the products in float32, see AutocastTests); tf32 is fp32 on the CPU; bf16 and bad values
    /// are one-line refusals before the output folder exists.
    /// </summary>
    [Fact]
    public void Train_Precision_Fp16AndTf32Train_Bf16AndBadValuesAreRefused()
    {
        string Args(string outDir, string extra) => $"train --model {Repo.Path("models", "mlp-digits")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {outDir} " +
            $"--steps 6 --warmup 2 --batch-size 16 --eval-every 0 --eval-samples 32 --save-every 0 --threads 1 {extra}";
        var fp32 = Path.Combine(_dir, "fp32");
        var fp16 = Path.Combine(_dir, "fp16");
        var tf32 = Path.Combine(_dir, "tf32");
        Assert.Equal(0, CliProcess.Run(Args(fp32, ""), output).Code);
        var (code, stdout, _) = CliProcess.RunWithOutput(Args(fp16, "--precision fp16 --loss-scale 256"), output);
        Assert.Equal(0, code);
        Assert.Contains("precision fp16: MatMul/Gemm in float16", stdout);
        Assert.Equal(0, CliProcess.Run(Args(tf32, "--precision tf32"), output).Code);
        var (a, b) = (Losses(fp32), Losses(fp16));
        Assert.Equal(6, b.Length);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-3 * Math.Abs(a[i]), $"step {i + 1}: fp16 loss {b[i]} vs fp32 {a[i]}");
        Assert.Equal(a, Losses(tf32));
        Assert.All(File.ReadLines(Path.Combine(fp16, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.TryGetProperty("loss", out _)),
            e => Assert.Equal(256, e.GetProperty("loss_scale").GetDouble()));
        Assert.Equal("fp16", JsonDocument.Parse(File.ReadAllText(Path.Combine(Checkpoints(fp16).Last(), "trainer_state.json"))).RootElement.GetProperty("precision").GetString());

        foreach (var (extra, message) in new[]
        {
            ("--precision bf16", "--precision bf16 needs --device cuda"),
            ("--precision fp8", "--precision 'fp8' is not one of fp32, tf32, bf16, fp16"),
            ("--precision fp16 --loss-scale 0", "--loss-scale must be a positive number, got 0"),
        })
        {
            var never = Never;
            var (c, stderr) = CliProcess.Run(Args(never, extra), output);
            Assert.Equal(1, c);
            Assert.Contains(message, stderr);
            Assert.Single(stderr.Trim().Split('\n'));
            Assert.False(Directory.Exists(never));
        }
    }

    /// <summary>
    /// --state-on-device on: the digits MLP trains with its state in ORT-allocated memory, stepped by graphs, to the host path's
    /// losses (SGD's and AdamW's rounding aside); a bad value is refused. bench train measures fp32 and fp16, host and device state.
    /// </summary>
    [Fact]
    public void Train_StateOnDevice_GivesTheHostPathsLosses_AndBenchTrainMeasuresIt()
    {
        string Args(string outDir, string extra) => $"train --model {Repo.Path("models", "mlp-digits")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {outDir} " +
            $"--steps 6 --warmup 2 --batch-size 16 --grad-accum 2 --eval-every 0 --eval-samples 32 --save-every 0 --threads 1 {extra}";
        var (host, device) = (Path.Combine(_dir, "host"), Path.Combine(_dir, "device"));
        Assert.Equal(0, CliProcess.Run(Args(host, "--state-on-device off"), output).Code);
        Assert.Equal(0, CliProcess.Run(Args(device, "--state-on-device on"), output).Code);
        var (a, b) = (Losses(host), Losses(device));
        Assert.Equal(6, b.Length);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * Math.Abs(a[i]), $"step {i + 1}: device state {b[i]} vs host {a[i]}");
        var never = Never;
        var (code, stderr) = CliProcess.Run(Args(never, "--state-on-device yes"), output);
        Assert.Equal(1, code);
        Assert.Contains("--state-on-device 'yes' is not one of auto, on, off", stderr);
        Assert.False(Directory.Exists(never));

        var (c, stdout, _) = CliProcess.RunWithOutput("bench train --layers 1 --width 16 --heads 2 --seq 8 --vocab 50 --batch 2 --steps 2 --warmup 1 --precision fp32,fp16 --state-on-device --json", output);
        Assert.Equal(0, c);
        var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.GetProperty("bench").GetString() == "train" && e.TryGetProperty("precision", out _)).ToArray();
        Assert.Equal(["fp32", "fp16"], rows.Select(e => e.GetProperty("precision").GetString()));
        Assert.All(rows, e => Assert.Equal("device (cpu)", e.GetProperty("state").GetString()));
        Assert.All(rows, e => Assert.True(e.GetProperty("tokens_per_s").GetDouble() > 0 && e.GetProperty("peak_rss_mb").GetDouble() > 0));
    }

    private static string[] Checkpoints(string outDir) => Directory.GetDirectories(Path.Combine(outDir, "checkpoints")).Order(StringComparer.Ordinal).ToArray();

    private static double[] Losses(string outDir) => File.ReadLines(Path.Combine(outDir, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("loss").GetDouble()).ToArray();
}
