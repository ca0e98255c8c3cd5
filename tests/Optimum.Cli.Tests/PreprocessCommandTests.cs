using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>preprocess writes a dataset that train reads by prefix or in a blend; bad flags and inputs are one-line errors.</summary>
public sealed class PreprocessCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Preprocess_ThenTrainOnThePrefix_AndOnABlend()
    {
        var (model, text) = TrainProcess.TinyJob(_dir);
        var jsonl = Path.Combine(_dir, "records.jsonl");
        File.WriteAllLines(jsonl, ["{\"body\": \"Call me Ishmael.\"}", "{\"body\": \"Some years ago, never mind how long precisely.\"}"]);
        var prefix = Path.Combine(_dir, "ds");
        var (code, stdout, stderr) = CliProcess.RunWithOutput($"preprocess --data {text} {jsonl} --json-key body -o {prefix} --tokenizer {model} --workers 2", output);
        Assert.Equal(0, code);
        Assert.Contains($"wrote {prefix}.bin and .idx: 3 documents", stdout);
        Assert.Contains("MB/s", stderr);                                                     // progress
        Assert.Equal([prefix + ".bin", prefix + ".idx"], Directory.GetFiles(_dir, "ds*").Order());

        (code, stdout, _) = CliProcess.RunWithOutput(TrainProcess.TrainArgs(model, prefix, Path.Combine(_dir, "one"), 2), output);
        Assert.Equal(0, code);
        Assert.Contains("memory-mapped", stdout);
        Assert.Contains("validation windows from the last 2 document(s)", stdout);
        (code, stdout, _) = CliProcess.RunWithOutput(TrainProcess.TrainArgs(model, prefix, Path.Combine(_dir, "blend"), 2).Replace($"--data {prefix}", $"--data-blend 0.25 {prefix} 0.75 {prefix}.idx"), output);
        Assert.Equal(0, code);
        Assert.Contains("blend: ", stdout);
        Assert.Contains("25.0 % ds", stdout);
    }

    [Fact]
    public void BadPreprocessAndTrainFlags_AreOneLineErrorsNamingWhatIsWrong()
    {
        var (model, text) = TrainProcess.TinyJob(_dir);
        var prefix = Path.Combine(_dir, "ds");
        void Fails(string args, string expected)
        {
            var (code, stderr) = CliProcess.Run(args, output);
            Assert.Equal(1, code);
            Assert.Contains(expected, stderr);
            Assert.Single(stderr.Trim().Split('\n'));
        }
        Fails($"preprocess --data {Path.Combine(_dir, "nope.txt")} -o {prefix}", $"Input '{Path.Combine(_dir, "nope.txt")}' is neither a file nor a folder");
        Fails($"preprocess --data {text} -o {prefix} --workers 0", "--workers 0 must be at least 1");
        Fails($"preprocess --data {text} -o {prefix} --tokenizer {Repo.Path("models", "mlp-digits")}", "does not train on documents tokenized ahead");
        Fails($"preprocess --data {text} -o {_dir}", "is a folder; give a prefix");
        Assert.Empty(Directory.GetFiles(_dir, "ds*"));
        var outDir = Path.Combine(_dir, "never");
        Fails(TrainProcess.TrainArgs(model, text, outDir, 2).Replace($"--data {text}", ""), "Give --data or --data-blend");
        Fails(TrainProcess.TrainArgs(model, text, outDir, 2).Replace($"--data {text}", $"--data-blend 0.5 {prefix} 0.5"), "--data-blend takes weight-dataset pairs");
        Fails(TrainProcess.TrainArgs(model, text, outDir, 2).Replace($"--data {text}", $"--data-blend 0 {prefix}"), $"the weight 0 of '{prefix}'");

        // A truncated .bin is refused naming it.
        Assert.Equal(0, CliProcess.Run($"preprocess --data {text} -o {prefix} --tokenizer {model}", output).Code);
        using (var f = new FileStream(prefix + ".bin", FileMode.Open)) f.SetLength(f.Length - 10);
        Fails(TrainProcess.TrainArgs(model, prefix, outDir, 2), $"Dataset {prefix}.bin has");
    }
}
