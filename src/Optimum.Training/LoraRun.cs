using System.Text;
using Optimum.Core;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Onnx.Lora;

namespace Optimum.Training;

/// <summary>
/// The LoRA side of a <see cref="TrainingJob"/> with <see cref="TrainerOptions.Lora"/>: the model folder the trainer runs
/// (the kind's definition with LoRA, written to OutputDir/lora-model/), its initial weights (the base's, A by PEFT's seeded
/// init, B zero), the frozen set (every base parameter) and, at the end, the PEFT adapter and the merged export.
/// </summary>
public sealed class LoraRun
{
    public const string ModelFolderName = "lora-model";
    public const string AdapterFolderName = "adapter";

    private LoraRun(string baseDir, string dir, LoraConfig config, IReadOnlyList<LoraModule> modules, IReadOnlyList<string> frozen, Func<GraphBuilder, bool, ModelOutputs> define) =>
        (BaseDir, ModelDir, Config, Modules, Frozen, Define) = (baseDir, dir, config, modules, frozen, define);

    /// <summary>The kind's definition with LoRA applied (what <see cref="ModelDir"/>'s graphs are built from; mixed precision rebuilds them from it).</summary>
    public Func<GraphBuilder, bool, ModelOutputs> Define { get; }

    /// <summary>The base model folder (--model).</summary>
    public string BaseDir { get; }
    /// <summary>The LoRA model folder the trainer runs (graphs and config, no weights).</summary>
    public string ModelDir { get; }
    public LoraConfig Config { get; }
    public IReadOnlyList<LoraModule> Modules { get; }
    /// <summary>Every trainable base parameter (all but the modules' A and B).</summary>
    public IReadOnlyList<string> Frozen { get; }

    /// <summary>Builds the LoRA graphs (rank 0 writes them, the others wait at a barrier); a kind without a definition is refused.</summary>
    internal static LoraRun Prepare(TrainerOptions t, IModelKind kind, object config, string modelType, ICommunicator comm)
    {
        if (t.Resume is { } resume) CheckResumable(t.Lora!, resume.Dir is { } d ? Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(d))) ?? t.OutputDir : t.OutputDir);
        var run = Create(t.ModelDir, Path.Combine(t.OutputDir, ModelFolderName), kind, config, modelType, t.Lora!, write: comm.Rank == 0);
        comm.Barrier();
        return run;
    }

    /// <summary>
    /// The LoRA model folder <paramref name="dir"/> (config and graphs, no weights) of the base folder <paramref name="baseDir"/>
    /// (whose kind, typed config and model type are given) with <paramref name="lora"/> applied; written unless
    /// <paramref name="write"/> is false (another process writes it). Targets that match no linear layer, and a kind that does
    /// not expose its graph definition, are refused.
    /// </summary>
    public static LoraRun Create(string baseDir, string dir, IModelKind kind, object config, string modelType, LoraConfig lora, bool write = true)
    {
        var define = kind.Define(config)
            ?? throw new NotSupportedException($"--lora-r: {modelType} models do not expose their graph definition, so LoRA training is not offered for them (gpt2 is).");
        lora = lora with { BaseModelNameOrPath = baseDir };
        var adapted = LoraGraph.Apply(define, lora);
        var probe = TrainingGraph.BuildEval(modelType + "_lora", adapted);                  // errors here when no target matches
        if (write)
        {
            Artifacts.Write(dir, modelType, kind.ToHf(config), adapted);
            // The LoRA settings beside the graphs, so a resume can tell whether it continues the same adapters.
            AtomicFile.Write(Path.Combine(dir, LoraAdapter.ConfigFile), Encoding.UTF8.GetBytes(LoraAdapter.ConfigJson(lora).ToJsonString() + "\n"));
        }
        return new LoraRun(baseDir, dir, lora, LoraGraph.Modules(probe), LoraGraph.FrozenParameters(probe), adapted);
    }

    /// <summary>
    /// A resume with LoRA continues the adapters of the run in <paramref name="runDir"/>: its LoRA settings (written beside its
    /// graphs) must be the ones asked for, since a checkpoint of A and B cannot tell another alpha or dropout apart. The base
    /// weights are checked by the trainer (the frozen parameters' SHA-256).
    /// </summary>
    private static void CheckResumable(LoraConfig asked, string runDir)
    {
        var dir = Path.Combine(runDir, ModelFolderName);
        if (!File.Exists(Path.Combine(dir, LoraAdapter.ConfigFile)))
            throw new InvalidDataException($"--resume with --lora-r: '{runDir}' holds no LoRA run to resume ({ModelFolderName}/{LoraAdapter.ConfigFile} is missing): start the LoRA run without --resume, or resume a run without LoRA without --lora-r.");
        var was = LoraAdapter.ReadConfig(dir);
        var differs = new List<string>();
        if (was.R != asked.R) differs.Add($"--lora-r {was.R}, not {asked.R}");
        if (was.LoraAlpha != asked.LoraAlpha) differs.Add($"--lora-alpha {was.LoraAlpha}, not {asked.LoraAlpha}");
        if (was.LoraDropout != asked.LoraDropout) differs.Add($"--lora-dropout {was.LoraDropout}, not {asked.LoraDropout}");
        if (was.TargetModulesRegex != asked.TargetModulesRegex || !was.TargetModules.Order(StringComparer.Ordinal).SequenceEqual(asked.TargetModules.Order(StringComparer.Ordinal)))
            differs.Add($"--lora-targets {was.TargetModulesRegex ?? string.Join(" ", was.TargetModules)}, not {asked.TargetModulesRegex ?? string.Join(" ", asked.TargetModules)}");
        if (was.UseRslora != asked.UseRslora) differs.Add($"use_rslora {was.UseRslora}, not {asked.UseRslora}");
        if (differs.Count > 0)
            throw new ArgumentException($"--resume: the LoRA run in '{runDir}' trained with {string.Join(", ", differs)}; resume with its settings or start over with --overwrite.");
    }

    /// <summary>Initial weights of <see cref="ModelDir"/>'s parameters: the base weights by name, A and B from <see cref="LoraAdapter.Initialize"/>.</summary>
    public float[][] InitialWeights(float[][] baseWeights, int seed)
    {
        var byName = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var baseParams = ModelFolder.ReadParameters(BaseDir);
        for (int i = 0; i < baseParams.Count; i++) byName[baseParams[i].Name] = baseWeights[i];
        foreach (var (p, v) in LoraAdapter.Initialize(Config, Modules, seed).Tensors) byName[p.Name] = v;
        return ModelFolder.ReadParameters(ModelDir).Select(p => byName.TryGetValue(p.Name, out var v) ? v
            : throw new InvalidDataException($"The LoRA graph's parameter '{p.Name}' is neither a base parameter of '{BaseDir}' nor a LoRA A/B.")).ToArray();
    }

    /// <summary>The trained adapter (A and B read from <paramref name="store"/>).</summary>
    public LoraAdapter Adapter(ParameterStore store)
    {
        var index = Index(store);
        return LoraAdapter.Create(Config, Modules,
            Modules.Select(m => store.Param(index[m.AName]).ToArray()).ToArray(),
            Modules.Select(m => store.Param(index[m.BName]).ToArray()).ToArray());
    }

    /// <summary>
    /// Writes OutputDir/adapter/ (PEFT files), and final/ (the base folder's graphs and files with the merged weights) and
    /// hf/ as a full-model run does.
    /// </summary>
    public void Export(ParameterStore store, string outputDir, IModelKind kind, Action<string> say)
    {
        var adapter = Adapter(store);
        var adapterDir = Path.Combine(outputDir, AdapterFolderName);
        adapter.Save(adapterDir);
        var index = Index(store);
        var ps = ModelFolder.ReadParameters(BaseDir);
        var merged = ps.Select(p => store.Param(index[p.Name]).ToArray()).ToArray();
        adapter.Merge(ps, merged);
        var final = Path.Combine(outputDir, "final");
        var hf = Path.Combine(outputDir, "hf");
        Directory.CreateDirectory(final);
        foreach (var src in Directory.GetFiles(BaseDir).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile && !Path.GetFileName(f).StartsWith('.')))
            AtomicFile.Write(Path.Combine(final, Path.GetFileName(src)), File.ReadAllBytes(src));
        HfWeights.Save(Path.Combine(final, ModelFolder.WeightsFile), ps, merged);
        HfWeights.SaveFolder(hf, ModelFolder.ReadConfig(BaseDir).Json, ps, merged);
        kind.ExportFiles(BaseDir, hf);
        say($"exported {adapterDir} (LoRA r {Config.R}, {adapter.ParameterCount:N0} parameters), and {final} and {hf} with the adapter merged");
    }

    private static Dictionary<string, int> Index(ParameterStore store) =>
        store.Parameters.Select((p, i) => (p.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
}
