using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary><c>bench train --lora-r</c>: the LoRA row's trainable parameters and optimizer state in closed form, its first loss the full model's.</summary>
public sealed class BenchTrainTests(ITestOutputHelper output)
{
    [Fact]
    public void LoraRow_CountsTheAdaptersAndStartsAtTheBaseModel()
    {
        const int layers = 2, width = 32, r = 4;
        var (code, stdout, _) = CliProcess.RunWithOutput($"bench train --json --layers {layers} --width {width} --heads 2 --seq 16 --vocab 200 --batch 2 "
            + $"--steps 1 --warmup 0 --lora-r {r} --lora-alpha 8 --lora-targets c_attn c_fc", output);
        Assert.Equal(0, code);
        var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.GetProperty("bench").GetString() == "train").ToArray();
        Assert.Equal(2, rows.Length);
        var (lora, full) = (rows[0], rows[1]);
        Assert.StartsWith("lora r 4 alpha 8", lora.GetProperty("training").GetString());
        Assert.Equal("full", full.GetProperty("training").GetString());
        // c_attn: 32 -> 96, c_fc: 32 -> 128; A is (r, in), B (out, r).
        long adapters = layers * (r * (width + 3 * width) + r * (width + 4 * width));
        Assert.Equal(adapters, lora.GetProperty("trainable_parameters").GetInt64());
        Assert.Equal(2 * 4 * adapters / 1e6, lora.GetProperty("optimizer_state_mb").GetDouble(), 9);   // AdamW: m and v
        long all = full.GetProperty("parameters").GetInt64();
        Assert.Equal(all, full.GetProperty("trainable_parameters").GetInt64());
        Assert.Equal(all + adapters, lora.GetProperty("parameters").GetInt64());
        Assert.Equal(2 * 4 * all / 1e6, full.GetProperty("optimizer_state_mb").GetDouble(), 6);
        // One measured step, no warm-up: the loss is computed before any update, and B = 0 makes the LoRA model the base.
        Assert.Equal(full.GetProperty("last_loss").GetDouble(), lora.GetProperty("last_loss").GetDouble());
    }
}

/// <summary><c>bench generate --precision</c> twice in the same work folder: the second run makes its quantized folders again (it was refused).</summary>
public sealed class BenchPrecisionTests(ITestOutputHelper output)
{
    [Fact]
    public void Precision_RunsTwiceInTheSameWorkFolder()
    {
        for (int run = 0; run < 2; run++)
        {
            var (code, stdout, _) = CliProcess.RunWithOutput("bench generate --json --layers 1 --width 32 --heads 2 --vocab 100 --prompt 4 --new-tokens 4 --precision fp32,int4", output);
            Assert.Equal(0, code);
            var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(e => e.GetProperty("bench").GetString() == "generate_precision").ToArray();
            Assert.Equal(["fp32", "int4"], rows.Select(r => r.GetProperty("precision").GetString()));
            Assert.All(rows, r => Assert.True(r.GetProperty("tokens_per_s").GetDouble() > 0));
        }
    }
}
