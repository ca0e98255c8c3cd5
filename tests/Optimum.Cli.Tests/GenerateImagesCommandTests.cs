using System.Diagnostics;
using Optimum.Hub;
using Optimum.Inference.Diffusion;
using Optimum.Models;
using Optimum.Plots;
using Optimum.Tests;
using SkiaSharp;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// <c>optimum-net generate-images</c> on the exported unet-tiny fixture: the files, their shapes and values (the fixture's
/// 10-step DDIM sample, tolerance 1e-3 as in its README), the PNG's pixels, and bad latents refused with nothing written.
/// </summary>
public sealed class GenerateImagesCommandTests(ITestOutputHelper output)
{
    private static string UnetTiny => Path.GetFullPath(Path.Combine(Repo.Fixture("."), "..", "ref", "unet-tiny"));

    [Fact]
    public void GenerateImages_FromTheFixturesLatents_WritesTheTrajectoryEndAsTensorAndGrid()
    {
        var tmp = Repo.TempDir();
        try
        {
            var model = Path.Combine(tmp, "model");
            ModelKinds.Export(UnetTiny, model);
            var expected = SafeTensorsFile.ReadAll(Path.Combine(UnetTiny, "expected.safetensors"));
            var xT = expected["ddim.x_T"].ToFloats();
            var latents = Path.Combine(tmp, "x_T.safetensors");
            SafeTensorsFile.Write(latents, [SafeTensor.FromFloats("x_T", [.. xT, .. xT], 2, 1, 16, 16)]);   // the same noise twice
            var outDir = Path.Combine(tmp, "out");
            var log = new StringWriter();
            GenerateImagesCommand.Run(new GenerateImagesArgs { ModelDir = model, OutDir = outDir, Steps = 10, Latents = latents, Threads = 1 }, log);
            output.WriteLine(log.ToString());
            Assert.Contains("step   10/10", log.ToString());

            var t = SafeTensorsFile.ReadAll(Path.Combine(outDir, ImageFiles.TensorFile));
            Assert.Equal([ImageFiles.TensorName], t.Keys);
            Assert.Equal([2L, 1, 16, 16], t["images"].Shape);
            var images = t["images"].ToFloats();
            var sample = expected["ddim.sample"].ToFloats();
            double worst = images.Select((v, i) => Math.Abs(v - sample[i % 256])).Max();
            output.WriteLine($"generate-images DDIM 10 steps from ddim.x_T (twice): max |Δ| {worst:E2} vs ddim.sample");
            Assert.True(worst <= 1e-3, $"max |Δ| {worst:E2}");

            // The grid: 2 images of 16×16 drawn 4× (at least 64 px), square layout 2×1, 2 px padding: 134 × 68 grayscale.
            using var png = SKBitmap.Decode(Path.Combine(outDir, ImageFiles.GridFile));
            Assert.Equal((134, 68), (png.Width, png.Height));
            foreach (var (k, y, x) in new[] { (0, 0, 0), (0, 7, 9), (1, 15, 15), (1, 3, 12) })
            {
                var pixel = png.GetPixel(2 + k * 66 + x * 4 + 3, 2 + y * 4 + 1);
                Assert.Equal(ImageGrid.ToByte(images[k * 256 + y * 16 + x]), pixel.Red);
                Assert.Equal(pixel.Red, pixel.Blue);                                         // grayscale
            }
            Assert.Equal(0, png.GetPixel(0, 0).Red);                                         // padding is black
            Assert.Equal(2, Directory.GetFiles(outDir).Length);                              // no temporaries left
        }
        finally { Directory.Delete(tmp, true); }
    }

    [Fact]
    public void GenerateImages_RefusesBadLatentsAndOptions_WithOneLineAndNothingWritten()
    {
        var tmp = Repo.TempDir();
        try
        {
            var model = Path.Combine(tmp, "model");
            ModelKinds.Export(UnetTiny, model);
            var two = Path.Combine(tmp, "two.safetensors");
            SafeTensorsFile.Write(two, [SafeTensor.FromFloats("a", new float[256], 1, 1, 16, 16), SafeTensor.FromFloats("b", new float[256], 1, 1, 16, 16)]);
            var wrong = Path.Combine(tmp, "wrong.safetensors");
            SafeTensorsFile.Write(wrong, [SafeTensor.FromFloats("x", new float[3 * 64], 3, 1, 8, 8)]);
            var outDir = Path.Combine(tmp, "out");

            var (code, stderr) = Cli($"generate-images --model {model} --latents {two} --steps 2 -o {outDir}");
            Assert.Equal(1, code);
            Assert.Equal($"error: '{two}' holds 2 tensors (a, b); latents are a file with exactly one tensor, the starting noise (N, C, H, W).", stderr.Trim());

            var e = Assert.Throws<ArgumentException>(() => GenerateImagesCommand.Run(new GenerateImagesArgs { ModelDir = model, OutDir = outDir, Latents = wrong, Steps = 2 }, TextWriter.Null));
            Assert.Equal($"--latents '{wrong}': Latents of shape [3, 1, 8, 8] do not fit the model: it takes (N, 1, 16, 16) (N images, in_channels 1, sample_size 16).", e.Message);
            Assert.Contains("--scheduler 'euler' is not one of ddim, ddpm",
                Assert.Throws<ArgumentException>(() => GenerateImagesCommand.Run(new GenerateImagesArgs { ModelDir = model, OutDir = outDir, Scheduler = "euler" }, TextWriter.Null)).Message);
            Assert.Contains("needs a class-conditional model",
                Assert.Throws<ArgumentException>(() => GenerateImagesCommand.Run(new GenerateImagesArgs { ModelDir = model, OutDir = outDir, Guidance = 3, Labels = [1], Steps = 2 }, TextWriter.Null)).Message);
            Assert.False(Directory.Exists(outDir), "a refused run must write nothing");
        }
        finally { Directory.Delete(tmp, true); }
    }

    private (int Code, string Stderr) Cli(string args) => CliProcess.Run(args, output);
}

/// <summary>The built CLI (dotnet optimum-net.dll) as a process.</summary>
internal static class CliProcess
{
    /// <summary>Runs it with <paramref name="args"/>; returns its exit code and standard error (both streams go to the test output).</summary>
    public static (int Code, string Stderr) Run(string args, Xunit.Abstractions.ITestOutputHelper output)
    {
        var (code, _, stderr) = RunWithOutput(args, output);
        return (code, stderr);
    }

    /// <summary>As <see cref="Run"/>, with standard output too.</summary>
    public static (int Code, string Stdout, string Stderr) RunWithOutput(string args, Xunit.Abstractions.ITestOutputHelper output, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo("dotnet", $"{Path.Combine(AppContext.BaseDirectory, "optimum-net.dll")} {args}")
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderrTask = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"optimum-net {args} did not finish in 300 s");
        }
        var stderr = stderrTask.Result;
        output.WriteLine($"$ optimum-net {args} -> exit {p.ExitCode}\n{stdout.Result}{stderr}");
        return (p.ExitCode, stdout.Result, stderr);
    }
}

/// <summary>The PNG grid writer: [−1, 1] to bytes as diffusers' numpy_to_pil, RGB layout, columns and refusals.</summary>
public sealed class ImageGridTests
{
    [Fact]
    public void RgbGrid_MapsValuesAndPlacesImagesByColumns()
    {
        var tmp = Repo.TempDir();
        try
        {
            // 3 RGB images of 2×2, 2 per row, no padding, scale 1: image k pixel (y, x) channel c = −1 + 0.25·k + 0.5·c + 0.1·(2y + x).
            var v = new float[3 * 3 * 4];
            for (int k = 0; k < 3; k++) for (int c = 0; c < 3; c++) for (int p = 0; p < 4; p++) v[k * 12 + c * 4 + p] = -1 + 0.25f * k + 0.5f * c + 0.1f * p;
            var path = Path.Combine(tmp, "grid.png");
            ImageGrid.Save(v, 3, 3, 2, 2, path, columns: 2, padding: 0);
            using var png = SKBitmap.Decode(path);
            Assert.Equal((4, 4), (png.Width, png.Height));
            var px = png.GetPixel(3, 2);                                                    // image 2 is in row 1, column 0: (x 3, y 2) is empty
            Assert.Equal((0, 0, 0), (px.Red, px.Green, px.Blue));
            px = png.GetPixel(3, 1);                                                        // image 1, pixel (1, 1): p = 3
            Assert.Equal((ImageGrid.ToByte(-1 + 0.25f + 0.3f), ImageGrid.ToByte(-1 + 0.25f + 0.5f + 0.3f), ImageGrid.ToByte(-1 + 0.25f + 1f + 0.3f)), (px.Red, px.Green, px.Blue));
            Assert.Equal((0, 128, 255, 255, 0), (ImageGrid.ToByte(-1), ImageGrid.ToByte(0.0019f), ImageGrid.ToByte(1), ImageGrid.ToByte(7), ImageGrid.ToByte(float.NaN)));
            Assert.Contains("2 channels cannot be drawn", Assert.Throws<ArgumentException>(() => ImageGrid.Save(new float[8], 1, 2, 2, 2, path)).Message);
            Assert.Contains("35 values are not 3 images of (3, 2, 2)", Assert.Throws<ArgumentException>(() => ImageGrid.Save(new float[35], 3, 3, 2, 2, path)).Message);
        }
        finally { Directory.Delete(tmp, true); }
    }
}
