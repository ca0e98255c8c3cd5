using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>train refuses counts it cannot use with one line naming the flag, before reading any data.</summary>
public sealed class TrainArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("--ranks 0", "--ranks 0 must be at least 1")]
    [InlineData("--ranks -2", "--ranks -2 must be at least 1")]
    [InlineData("--threads -1", "--threads -1 must be at least 1")]
    [InlineData("--threads 0", "--threads 0 must be at least 1")]
    [InlineData("--seed 1.5", "Cannot parse argument '1.5' for option '--seed' as an integer (optimum-net train --help lists the options).")]
    [InlineData("--steps many", "Cannot parse argument 'many' for option '--steps' as an integer")]
    [InlineData("--lr fast", "Cannot parse argument 'fast' for option '--lr' as a number")]
    [InlineData("--stop-after 0", "--stop-after 0 must be at least 1 update")]
    [InlineData("--stop-after -1", "--stop-after -1 must be at least 1 update")]
    public void BadCounts_AreOneLineErrors(string flag, string expected)
    {
        var model = Repo.Path("models", "mlp-digits");
        var (code, stderr) = CliProcess.Run($"train --model {model} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {Path.Combine(Path.GetTempPath(), "never-" + Guid.NewGuid().ToString("N"))} {flag}", output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}

/// <summary>--freeze patterns that match no trainable parameter, or that freeze them all, are one-line errors naming them.</summary>
public sealed class TrainFreezeArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("--freeze transformer.h.9", "--freeze 'transformer.h.9' matches no trainable parameter")]
    [InlineData("--freeze transformer.h.0 --freeze h.1", "--freeze 'h.1' matches no trainable parameter")]
    [InlineData("--freeze transformer", "freezes all 52 trainable parameters: nothing would be trained")]
    public void BadFreezePatterns_AreOneLineErrors(string flags, string expected)
    {
        var (code, stderr) = CliProcess.Run($"train --model {Repo.Path("models", "gpt2-mini")} --data {Repo.Path("samples", "data", "moby-dick.txt")} --out {Path.Combine(Path.GetTempPath(), "never-" + Guid.NewGuid().ToString("N"))} --steps 2 --warmup 0 {flags}", output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}

/// <summary>LoRA flags that cannot run are one-line errors naming them (targets that match nothing, before the data is read).</summary>
public sealed class TrainLoraArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("--lora-alpha 16", "--lora-alpha, --lora-targets and --lora-dropout need --lora-r")]
    [InlineData("--lora-targets c_attn", "--lora-alpha, --lora-targets and --lora-dropout need --lora-r")]
    [InlineData("--lora-r 0 --lora-targets c_attn", "--lora-r 0 must be at least 1")]
    [InlineData("--lora-r 4", "--lora-r needs --lora-targets")]
    [InlineData("--lora-r 4 --lora-targets c_attn --ema", "--ema is not supported with --lora-r yet")]
    [InlineData("--lora-r 4 --lora-targets c_attn --resume latest", "holds no LoRA run to resume")]
    [InlineData("--lora-r 4 --lora-targets nope", "LoRA target_modules [nope] not found")]
    public void BadLoraFlags_AreOneLineErrors(string flags, string expected)
    {
        var (code, stderr) = CliProcess.Run($"train --model {Repo.Path("models", "gpt2-mini")} --data {Repo.Path("samples", "data", "moby-dick.txt")} --out {Path.Combine(Path.GetTempPath(), "never-" + Guid.NewGuid().ToString("N"))} --steps 2 --warmup 0 {flags}", output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}

/// <summary>
/// Options that do not fit the model or the data are refused naming them: --seq-len for kinds that train at their
/// config's lengths (it was silently ignored), and a global batch larger than the data (--ranks 200 ran out of memory).
/// </summary>
public sealed class TrainDataArgumentsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private (int Code, string Stderr) Train(string model, string data, string flags) =>
        CliProcess.Run($"train --model {model} --data {data} --out {Path.Combine(_dir, "out-" + Guid.NewGuid().ToString("N"))} --steps 2 --warmup 0 {flags}", output);

    [Theory]
    [InlineData("t5", "2")]
    [InlineData("t5", "100000")]
    [InlineData("informer", "-1")]
    [InlineData("time_series_transformer", "16")]
    public void SeqLen_IsRefusedForKindsThatDoNotCutWindows(string type, string seqLen)
    {
        var model = Path.Combine(_dir, type);
        Optimum.Models.ModelKinds.WritePreset(model, type == "t5"
            ? new Optimum.Core.T5Config { VocabSize = 40, DModel = 16, DKv = 4, DFf = 32, NumLayers = 1, NumDecoderLayers = 1, NumHeads = 2 }
            : Optimum.Core.TimeSeriesConfig.Monthly(type, seriesCount: 3), seed: 0);
        var data = Path.Combine(_dir, "data.tsv");
        File.WriteAllText(data, "a\tb\n");
        var (code, stderr) = Train(model, data, $"--seq-len {seqLen}");
        Assert.Equal(1, code);
        Assert.Contains($"--seq-len {seqLen} does not apply to {type} models", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("1", "--seq-len 1 must be at least 2")]
    [InlineData("257", "--seq-len 257 exceeds the model's n_positions 256")]
    public void SeqLen_OutsideTheCausalLmsRange_IsRefused(string seqLen, string expected)
    {
        var (code, stderr) = Train(Repo.Path("models", "gpt2-mini"), Repo.Path("samples", "data", "moby-dick.txt"), $"--seq-len {seqLen}");
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
    }

    /// <summary>200 in-process ranks of 16 digits each want 3,200 samples per update; the data has fewer. Refused before any rank loads weights.</summary>
    [Fact]
    public void GlobalBatchLargerThanTheData_IsRefused()
    {
        var (code, stderr) = Train(Repo.Path("models", "mlp-digits"), Repo.Path("samples", "data", "digits.csv.gz"), "--ranks 200 --batch-size 16");
        Assert.Equal(1, code);
        Assert.Matches(@"The data has [\d,]+ training samples, fewer than one update takes: batch size 16 x grad accum 1 x 200 rank\(s\) = 3,200", stderr);
    }
}

/// <summary>Output folders that are files, serve flags out of range and the wrong data file are named in one line.</summary>
public sealed class CommandInputTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void OutputFolderThatIsAFile_IsRefusedByEveryCommandThatWritesOne()
    {
        var file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        foreach (var args in new[]
        {
            $"train --model {Repo.Path("models", "mlp-digits")} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {file}",
            $"train-mlp --out {file}",
            $"export --preset gpt2-mini -o {file}",
            $"forecast --model {_dir} --data {file} --out {file}",
            $"generate-images --model {_dir} --out {file}",
        })
        {
            var (code, stderr) = CliProcess.Run(args, output);
            Assert.Equal(1, code);
            Assert.Contains($"--out '{file}' is a file; give a folder", stderr);
            Assert.Equal("x", File.ReadAllText(file));
        }
    }

    [Theory]
    [InlineData("--timeout NaN", "--timeout NaN must be a positive number of seconds")]
    [InlineData("--timeout 0", "--timeout 0 must be a positive number of seconds")]
    [InlineData("--max-concurrent 0", "--max-concurrent 0 must be at least 1")]
    [InlineData("--queue -1", "--queue -1 must be >= 0")]
    [InlineData("--threads -1", "--threads -1 must be >= 0")]
    public void ServeFlagsOutOfRange_AreNamedAsFlags(string flag, string expected)
    {
        var (code, stderr) = CliProcess.Run($"serve --model {_dir} {flag}", output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    /// <summary>train-mlp on a text file said "unsupported compression method"; now the file, line and what it expected.</summary>
    [Fact]
    public void TrainMlpOnATextFile_NamesTheFileAndLine()
    {
        var text = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(text, "hello world\n");
        var (code, stderr) = CliProcess.Run($"train-mlp --data {text} --out {Path.Combine(_dir, "o")}", output);
        Assert.Equal(1, code);
        Assert.Contains($"{text}:1: expected 65 fields, got 1", stderr);
        var gz = Path.Combine(_dir, "broken.csv.gz");
        File.WriteAllBytes(gz, [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF]);
        (code, stderr) = CliProcess.Run($"train-mlp --data {gz} --out {Path.Combine(_dir, "o")}", output);
        Assert.Equal(1, code);
        Assert.Contains($"{gz}: not a readable digits CSV (damaged gzip data?)", stderr);
    }
}

/// <summary>mpi-check refuses a chunk that would never advance through a buffer (it hung).</summary>
public sealed class MpiCheckArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("0")]
    [InlineData("-5")]
    public void ZeroOrNegativeChunk_IsAnError(string chunk)
    {
        var (code, stderr) = CliProcess.Run($"mpi-check --chunk {chunk}", output);
        Assert.Equal(1, code);
        Assert.Contains($"--chunk {chunk} must be at least 1", stderr);
    }
}

/// <summary>serve's start-up failures are one line and exit 1, before "serving" is printed.</summary>
public sealed class ServeStartupTests(ITestOutputHelper output)
{
    [Fact]
    public void PortInUse_AndBadUrls_AreOneLineErrors()
    {
        var dir = Repo.TempDir();
        try
        {
            var model = Path.Combine(dir, "unet");
            Optimum.Models.ModelKinds.WritePreset(model, new Optimum.Core.UNet2DConfig
            {
                SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8], LayersPerBlock = 1, NormNumGroups = 4,
                DownBlockTypes = ["DownBlock2D"], UpBlockTypes = ["UpBlock2D"],
            }, seed: 0);
            using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            taken.Start();
            int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
            foreach (var (urls, expected) in new[]
            {
                ($"http://127.0.0.1:{port}", "address already in use"),
                ("garbage", "--urls 'garbage' is not a usable address"),
                ("http://127.0.0.1:99999", "--urls 'http://127.0.0.1:99999' is not a usable address"),
            })
            {
                var (code, stderr) = CliProcess.Run($"serve --model {model} --urls {urls} --threads 1", output);
                Assert.Equal(1, code);
                Assert.Contains(expected, stderr);
                Assert.Single(stderr.Trim().Split('\n'));
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}

/// <summary>A parse error names the whole command path in its pointer to the help (it said "train" for "bench train").</summary>
public sealed class ParseErrorTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("bench train --memory-pattern maybe", "(optimum-net bench train --help lists the options)")]
    [InlineData("bench serve --clients two", "as an integer (optimum-net bench serve --help lists the options)")]
    [InlineData("bench train --arena Bogus", "error: --arena 'Bogus' is not one of Off, PerSession, Shared (optimum-net bench train --help lists the options).")]
    public void ParseErrors_PointToTheSubcommandsHelp(string args, string expected)
    {
        var (code, stderr) = CliProcess.Run(args, output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
