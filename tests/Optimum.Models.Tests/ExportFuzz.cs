using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Tests.Fuzz;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>The folders, seeds and whole-export check the export fuzz campaigns share.</summary>
internal static class ExportFuzz
{
    public static readonly string[] KindNames = ["gpt2", "t5", "informer", "time_series_transformer", "UNet2DModel", "mlp"];

    public static TheoryData<string> Kinds => [.. KindNames];

    /// <summary>A writable copy of the kind's HF folder: the shared fixtures, or (mlp, which has none) one written by ExportHf (64-64-10).</summary>
    public static string HfFolder(string kind, string dir)
    {
        var hf = Path.Combine(dir, "hf");
        if (kind == "mlp")
        {
            var cfg = new MlpConfig();
            var preset = Path.Combine(dir, "mlp-preset");
            ModelKinds.WritePreset(preset, cfg, seed: 5);
            var ps = ModelFolder.ReadParameters(preset);
            ModelKinds.ExportHf(hf, cfg, ps, HfWeights.Load(Path.Combine(preset, ModelFolder.WeightsFile), ps, out _));
            return hf;
        }
        var src = kind switch
        {
            "gpt2" => Repo.Fixture("gpt2-tiny"),
            "t5" => Repo.Fixture("t5-tiny"),
            "informer" => Repo.Fixture("informer-tiny"),
            "time_series_transformer" => Repo.Fixture("tst-tiny"),
            _ => UnetTiny.Dir,
        };
        Directory.CreateDirectory(hf);
        foreach (var f in new[] { ModelFolder.ConfigFile, ModelFolder.WeightsFile }) File.Copy(Path.Combine(src, f), Path.Combine(hf, f));
        return hf;
    }

    public static int Seed(string kind) => 1400 + Array.IndexOf(KindNames, kind);

    /// <summary>
    /// One whole export into <paramref name="dest"/>: refused with everything under <paramref name="outRoot"/> unchanged, or
    /// written and passing <paramref name="verify"/> (given the folder and the unused tensors).
    /// </summary>
    public static void Export(Campaign campaign, Mutation m, string hf, string dest, string outRoot, string file, Func<string, IReadOnlyList<string>, string?> verify,
        string? field = null, string? orFile = null)
    {
        var before = Campaign.Snapshot(outRoot);
        IReadOnlyList<string> unused = [];
        bool accepted = campaign.Attempt(m, () => unused = ModelKinds.Export(hf, dest), file, field, () => verify(dest, unused), orFile);
        if (!accepted && Campaign.Snapshot(outRoot) is var after && after != before)
            campaign.HalfWrite(m, $"a refused export changed {outRoot}:\nbefore:\n{before}\nafter:\n{after}");
        if (accepted && dest.EndsWith("fresh", StringComparison.Ordinal)) Directory.Delete(dest, true);   // "fresh" stays absent
    }

    /// <summary>The exported folder holds <paramref name="expected"/>'s weights and reported its unused tensors.</summary>
    public static string? Holds(string dest, IReadOnlyList<string> unused, StJudgement expected)
    {
        var ps = ModelFolder.ReadParameters(dest);
        return Differences(HfWeights.Load(Path.Combine(dest, ModelFolder.WeightsFile), ps, out _), expected.Weights!, ps) ?? Differences(unused, expected.Unused!);
    }

    public static string? Differences(float[][] read, float[][] expected, IReadOnlyList<ParameterInfo> ps)
    {
        for (int i = 0; i < ps.Count; i++)
            if (!read[i].AsSpan().SequenceEqual(expected[i])) return $"'{ps[i].Name}' read differs from the file's values";
        return null;
    }

    public static string? Differences(IReadOnlyList<string> unused, IReadOnlyList<string> expected) =>
        unused.Order(StringComparer.Ordinal).SequenceEqual(expected.Order(StringComparer.Ordinal)) ? null
            : $"unused tensors [{string.Join(", ", unused)}], expected [{string.Join(", ", expected)}]";
}
