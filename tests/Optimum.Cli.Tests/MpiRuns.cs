using System.Diagnostics;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>The test classes that start mpirun: one collection, so that two MPI jobs never share the cores.</summary>
[CollectionDefinition(Name)]
public sealed class MpirunCollection
{
    public const string Name = "mpirun";
}

/// <summary>
/// What the mpirun tests share: the CLI, a tiny GPT-2 and its text, the training arguments whose runs are
/// compared, and the tolerance they must agree to.
/// </summary>
internal static class MpiRuns
{
    /// <summary>Largest relative weight difference (values under 1e-2 compared absolutely) between runs that must agree.</summary>
    public const double Tolerance = 1e-6;

    public static string Cli => Path.Combine(AppContext.BaseDirectory, "optimum-net.dll");

    public static string? Mpirun => Which("mpirun");

    public static string? Which(string name) => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    /// <summary>Skips the test, or under OPTIMUM_REQUIRE_MPI=1 (as CI sets) fails it, when <paramref name="missing"/> is not null.</summary>
    public static void Require(string? missing)
    {
        if (missing is null) return;
        if (Environment.GetEnvironmentVariable("OPTIMUM_REQUIRE_MPI") == "1") Assert.Fail($"OPTIMUM_REQUIRE_MPI=1 but {missing}");
        Skip.If(true, missing);
    }

    public static void RequireMpi() =>
        Require(Mpirun is null ? "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)." : null);

    /// <summary>Runs a process to the end (stdin closed, TERM=dumb), failing the test past <paramref name="timeoutMs"/>; stdout + stderr.</summary>
    public static (int Code, string Out) Exec(ProcessStartInfo psi, ITestOutputHelper output, string shown, int timeoutMs = 180_000)
    {
        psi.RedirectStandardOutput = psi.RedirectStandardError = psi.RedirectStandardInput = true;
        psi.Environment["TERM"] = "dumb";
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs)) { p.Kill(true); Assert.Fail($"timed out after {timeoutMs / 1000} s: {shown}"); }
        var text = stdout.Result + stderr.Result;
        output.WriteLine($"$ {shown}  -> exit {p.ExitCode} ({clock.Elapsed.TotalSeconds:F1} s)");
        return (p.ExitCode, text);
    }

    /// <summary>A one-layer GPT-2 of width 8 (GPT-2's vocabulary, so about 400,000 parameters) under <paramref name="dir"/>/model.</summary>
    public static string Model(string dir)
    {
        var model = Path.Combine(dir, "model");
        ModelKinds.Write(model, new Gpt2Config
        {
            VocabSize = 50257, NPositions = 32, NEmbd = 8, NLayer = 1, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
        });
        return model;
    }

    /// <summary>The first 40,000 characters of Moby-Dick under <paramref name="dir"/>.</summary>
    public static string Data(string dir)
    {
        var path = Path.Combine(dir, "text.txt");
        File.WriteAllText(path, File.ReadAllText(Repo.Path("samples", "data", "moby-dick.txt"))[..40_000]);
        return path;
    }

    /// <summary>8 SGD steps with a schedule and clipping; <paramref name="batch"/> per rank, so N ranks x batch must stay the same to compare.</summary>
    public static string Train(string model, string data, string outDir, int batch, string extra = "") =>
        $"train --model {model} --data {data} --out {outDir} --steps 8 --batch-size {batch} --seq-len 16 --optimizer sgd " +
        $"--lr 0.05 --warmup 2 --schedule linear --clip 0.5 --eval-every 4 --eval-samples 8 --seed 3 --threads 1 {extra}";

    public static float[][] Final(string outDir, IReadOnlyList<ParameterInfo> ps) =>
        HfWeights.Load(Path.Combine(outDir, "final", "model.safetensors"), ps, out _);

    public static double MaxRelativeDiff(float[][] a, float[][] b) => Diff.MaxRelative(a, b, floor: 1e-2);
}
