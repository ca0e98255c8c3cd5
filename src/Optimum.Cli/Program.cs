using System.CommandLine;
using Optimum.Cli;
using Optimum.Models;
using Optimum.Onnx;

var root = new RootCommand("optimum-net: train and serve transformer models on ONNX Runtime.");

// train-mlp: the bundled main job until the GPT-2 trainer lands.
var model = new Option<string>("--model") { Description = "Artifact folder (config.json, training.onnx, eval.onnx).", DefaultValueFactory = _ => "models/mlp-digits" };
var data = new Option<string>("--data") { Description = "Digits CSV (gzip).", DefaultValueFactory = _ => "samples/data/digits.csv.gz" };
var outDir = new Option<string>("--out") { Description = "Where the loss curve PNG goes.", DefaultValueFactory = _ => "out/mlp-digits" };
var epochs = new Option<int>("--epochs") { Description = "Passes over the training split.", DefaultValueFactory = _ => 20 };
var batch = new Option<int>("--batch-size") { Description = "Examples per step.", DefaultValueFactory = _ => 32 };
var lr = new Option<float>("--lr") { Description = "Learning rate.", DefaultValueFactory = _ => 0.05f };
var momentum = new Option<float>("--momentum") { Description = "SGD momentum.", DefaultValueFactory = _ => 0.9f };
var seed = new Option<int>("--seed") { Description = "Initialisation and shuffling seed.", DefaultValueFactory = _ => 0 };
var trainMlp = new Command("train-mlp", "Train the digits MLP from its emitted ONNX training graph and plot the losses.")
{
    model, data, outDir, epochs, batch, lr, momentum, seed,
};
trainMlp.SetAction(r => Cli.Guard(() => MlpDemo.Run(new MlpDemoOptions(
    r.GetValue(model)!, r.GetValue(data)!, r.GetValue(outDir)!, r.GetValue(epochs), r.GetValue(batch), r.GetValue(lr), r.GetValue(momentum), r.GetValue(seed)), Console.Out)));
root.Subcommands.Add(trainMlp);

// artifacts: regenerate the committed default artifacts.
var artifactsOut = new Option<string>("--out") { Description = "Folder that receives one subfolder per default model.", DefaultValueFactory = _ => "models" };
var artifacts = new Command("artifacts", "Regenerate the default model artifacts (deterministic: same bytes every time).") { artifactsOut };
artifacts.SetAction(r => Cli.Guard(() =>
{
    foreach (var (name, write) in Artifacts.Defaults)
    {
        var dir = Path.Combine(r.GetValue(artifactsOut)!, name);
        write(dir);
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
var export = new Command("export", "Write training/eval/inference graphs, config.json and model.safetensors for a GPT-2 config.") { exportSrc, exportDst, preset, exportSeed };
export.SetAction(r => Cli.Guard(() =>
{
    string src = r.GetValue(exportSrc) ?? "", dst = r.GetValue(exportDst)!, name = r.GetValue(preset) ?? "";
    if ((src == "") == (name == "")) throw new ArgumentException("Give either an HF folder or --preset, not both or neither.");
    if (name != "")
    {
        if (name != "gpt2-mini") throw new ArgumentException($"Unknown preset '{name}'; presets: gpt2-mini.");
        Gpt2Artifacts.WritePreset(dst, Gpt2Artifacts.Mini, r.GetValue(exportSeed));
        Console.WriteLine($"wrote {dst} (preset {name}, weights from seed {r.GetValue(exportSeed)})");
        return 0;
    }
    var unused = Gpt2Artifacts.Export(src, dst, r.GetValue(exportSeed));
    foreach (var u in unused) Console.Error.WriteLine($"warning: checkpoint tensor '{u}' is not a parameter of the model and was ignored");
    Console.WriteLine($"wrote {dst} from {src}");
    return 0;
}));
root.Subcommands.Add(export);

// inspect: what an ONNX file holds.
var file = new Argument<string>("file") { Description = "An .onnx model." };
var inspect = new Command("inspect", "Print an ONNX model's inputs, outputs and op counts.") { file };
inspect.SetAction(r => Cli.Guard(() =>
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

return root.Parse(args).Invoke();

namespace Optimum.Cli
{
    internal static class Cli
    {
        /// <summary>Runs a command; expected failures (bad files, bad options) print one clear line and exit 1.</summary>
        public static int Guard(Func<int> body)
        {
            try { return body(); }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or GraphBuildException or UnauthorizedAccessException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
        }
    }
}
