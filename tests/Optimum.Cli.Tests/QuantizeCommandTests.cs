using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary><c>optimum-net quantize</c> as a process: refusals name what is wrong; its output folder generates through <c>generate</c>.</summary>
public sealed class QuantizeCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Quantize_RefusesBadInput_AndWritesNothing()
    {
        var outDir = Path.Combine(_dir, "q");
        var missing = Path.Combine(_dir, "missing");
        var (code, err) = CliProcess.Run($"quantize {missing} -o {outDir} --weights int4", output);
        Assert.Equal((1, true), (code, err.Contains($"Model folder '{missing}' does not exist")));
        var mini = Repo.Path("models", "gpt2-mini");
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int3", output);
        Assert.Equal((1, true), (code, err.Contains("--weights: 'int3' is not a supported precision")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int4 --block-size 24", output);
        Assert.Equal((1, true), (code, err.Contains("power of two >= 16") && err.Contains("got 24")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int8 --int8-operator fast", output);
        Assert.Equal((1, true), (code, err.Contains("--int8-operator: 'fast'")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int4", output);              // graphs and config, no weights
        Assert.Equal((1, true), (code, err.Contains("has no model.safetensors")));
        Assert.False(Directory.Exists(outDir));
    }

    /// <summary>--evaluate on a model that is not a causal LM (an Informer forecaster) is refused before any output is written.</summary>
    [Fact]
    public void Evaluate_OnANonCausalModel_IsRefusedBeforeWriting()
    {
        var model = Path.Combine(_dir, "informer");
        ModelKinds.Write(model, new TimeSeriesConfig
        {
            ModelType = "informer", PredictionLength = 6, ContextLength = 12, LagsSequence = [1, 12], NumTimeFeatures = 2, TimeFeatures = "monthly",
            NumStaticCategoricalFeatures = 1, Cardinality = [3], EmbeddingDimension = [2], DModel = 8, EncoderLayers = 2, DecoderLayers = 1,
            EncoderFfnDim = 8, DecoderFfnDim = 8, Dropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        });
        var ps = ModelFolder.ReadParameters(model);
        HfWeights.Save(Path.Combine(model, ModelFolder.WeightsFile), ps, ModelKinds.InitialWeights(model, 0));
        var text = Path.Combine(_dir, "text.txt");
        File.WriteAllText(text, "Call me Ishmael.");
        var outDir = Path.Combine(_dir, "q");
        var (code, err) = CliProcess.Run($"quantize {model} -o {outDir} --weights int8 --evaluate {text}", output);
        Assert.Equal(1, code);
        Assert.Contains($"--evaluate measures causal language models; '{model}' is a", err);
        Assert.False(Directory.Exists(outDir));
    }

    /// <summary>The model folder as --out is refused naming it; an old non-empty folder only with --overwrite, then replaced whole.</summary>
    [Fact]
    public void Out_IsTheModelFolder_OrNonEmpty_IsRefusedWithoutOverwrite()
    {
        var f32 = Path.Combine(_dir, "f32");
        Assert.Equal(0, CliProcess.Run($"export --preset gpt2-mini -o {f32}", output).Code);
        var (code, err) = CliProcess.Run($"quantize {f32} -o {f32} --weights int4", output);
        Assert.Equal((1, true), (code, err.Contains($"Output folder '{f32}' is the model folder")));
        var q = Path.Combine(_dir, "q");
        Directory.CreateDirectory(q);
        File.WriteAllText(Path.Combine(q, "old.txt"), "x");
        (code, err) = CliProcess.Run($"quantize {f32} -o {q} --weights int8", output);
        Assert.Equal((1, true), (code, err.Contains($"Output folder '{q}' exists and is not empty; pass --overwrite")));
        var (code2, stdout, _) = CliProcess.RunWithOutput($"quantize {f32} -o {q} --weights int8 --reduce-range --overwrite", output);
        Assert.Equal(0, code2);
        Assert.Contains("reduced range [-63, 63]", stdout);
        Assert.False(File.Exists(Path.Combine(q, "old.txt")));
        Assert.True(File.Exists(Path.Combine(f32, "training.onnx")));     // the source keeps its files
    }

    [Fact]
    public void QuantizedPreset_GeneratesThroughTheGenerateCommand()
    {
        var f32 = Path.Combine(_dir, "f32");
        var q = Path.Combine(_dir, "q");
        Assert.Equal(0, CliProcess.Run($"export --preset gpt2-mini -o {f32}", output).Code);
        var (code, stdout, _) = CliProcess.RunWithOutput($"quantize {f32} -o {q} --weights int4 --block-size 64", output);
        Assert.Equal(0, code);
        Assert.Contains("(int4, block 64, zero points, MatMulNBits)", stdout);
        (code, stdout, _) = CliProcess.RunWithOutput($"generate --model {q} --prompt \"Call me\" --max-new-tokens 4 --temperature 0", output);
        Assert.Equal(0, code);
        Assert.StartsWith("Call me", stdout);
        Assert.True(stdout.TrimEnd().Length > "Call me".Length, stdout);
    }
}
