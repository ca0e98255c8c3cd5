namespace Optimum.Models;

/// <summary>
/// diffusers' UNet2DModel in the graph-builder DSL with diffusers' parameter names: a sinusoidal time embedding
/// through a two-layer MLP (plus a class embedding for class-conditional models), conv_in, down blocks of
/// ResnetBlock2D (+ self-attention in AttnDownBlock2D) with stride-2 downsampling, a mid block
/// (resnet, attention, resnet), up blocks over the skips with nearest ×2 upsampling, then GroupNorm, SiLU, conv_out.
/// The training graph predicts the noise and returns the mean squared error against <c>target</c>.
/// </summary>
public sealed class UNet2D : GraphModel<UNet2DConfig>
{
    private Value _temb = null!;

    private UNet2D(GraphBuilder g, UNet2DConfig c, DType dtype, bool training) : base(g, c, dtype, training) => c.Validate();

    /// <summary>
    /// sample (batch, in, H, W), timestep (batch) int64, [class_labels (batch) int64], target (batch, out, H, W) →
    /// loss = mean((UNet(sample, timestep) − target)²) and the predicted noise as output "noise_pred".
    /// </summary>
    public static ModelOutputs Define(GraphBuilder g, bool training, UNet2DConfig c, DType dtype = DType.Float)
    {
        var (sample, timestep, classes) = Inputs(g, c, dtype);
        var target = g.Input("target", dtype, Shape.Of("batch", c.OutChannels, c.SampleSize, c.SampleSize));
        var eps = new UNet2D(g, c, dtype, training).Forward(sample, timestep, classes);
        var d = eps - target;
        return new ModelOutputs(g.ReduceMean(d * d, [0, 1, 2, 3], keepDims: false), [new("noise_pred", eps)]);
    }

    /// <summary>The inference graph: sample, timestep[, class_labels] → noise_pred.</summary>
    public static void DefineDenoiser(GraphBuilder g, UNet2DConfig c, DType dtype = DType.Float)
    {
        var (sample, timestep, classes) = Inputs(g, c, dtype);
        g.Output(new UNet2D(g, c, dtype, training: false).Forward(sample, timestep, classes), "noise_pred");
    }

    private static (Value Sample, Value Timestep, Value? Classes) Inputs(GraphBuilder g, UNet2DConfig c, DType dtype) => (
        g.Input("sample", dtype, Shape.Of("batch", c.InChannels, c.SampleSize, c.SampleSize)),
        g.Input("timestep", DType.Int64, Shape.Of("batch")),
        c.NumClassEmbeds is null ? null : g.Input("class_labels", DType.Int64, Shape.Of("batch")));

    private Value Forward(Value sample, Value timestep, Value? classes)    // sample: (B, C, H, W)
    {
        int ch0 = c.BlockOutChannels[0];
        var t = TimestepEmbedding.Sinusoidal(g, timestep, ch0, c.FlipSinToCos, c.FreqShift, dt);       // (B, ch0)
        _temb = Linear(Silu(Linear(t, "time_embedding.linear_1", c.TimeEmbedDim, ch0)), "time_embedding.linear_2", c.TimeEmbedDim, c.TimeEmbedDim);
        if (classes is not null) _temb = _temb + g.Gather(P("class_embedding.weight", c.NumClassEmbeds!.Value, c.TimeEmbedDim), classes, 0);

        var h = Conv(sample, "conv_in", c.InChannels, ch0, 3);
        var skips = new Stack<Value>([h]);
        int channels = ch0;
        for (int i = 0; i < c.BlockOutChannels.Length; i++)
        {
            int output = c.BlockOutChannels[i];
            for (int j = 0; j < c.LayersPerBlock; j++)
            {
                h = Resnet(h, $"down_blocks.{i}.resnets.{j}", j == 0 ? channels : output, output);
                if (c.DownBlockTypes[i] == "AttnDownBlock2D") h = Attention(h, $"down_blocks.{i}.attentions.{j}", output);
                skips.Push(h);
            }
            if (i < c.BlockOutChannels.Length - 1)
            {
                h = Conv(h, $"down_blocks.{i}.downsamplers.0.conv", output, output, 3, stride: 2, pad: c.DownsamplePadding);
                skips.Push(h);
            }
            channels = output;
        }

        h = Resnet(h, "mid_block.resnets.0", channels, channels);
        h = Attention(h, "mid_block.attentions.0", channels);
        h = Resnet(h, "mid_block.resnets.1", channels, channels);

        var reversed = c.BlockOutChannels.Reverse().ToArray();
        for (int i = 0; i < reversed.Length; i++)
        {
            int output = reversed[i], input = reversed[Math.Min(i + 1, reversed.Length - 1)];
            for (int j = 0; j <= c.LayersPerBlock; j++)
            {
                var skip = skips.Pop();
                int skipChannels = j == c.LayersPerBlock ? input : output, resnetIn = j == 0 ? channels : output;
                h = Resnet(g.Concat(1, h, skip), $"up_blocks.{i}.resnets.{j}", resnetIn + skipChannels, output);
                if (c.UpBlockTypes[i] == "AttnUpBlock2D") h = Attention(h, $"up_blocks.{i}.attentions.{j}", output);
            }
            if (i < reversed.Length - 1) h = Conv(g.ResizeNearest(h, [1, 1, 2, 2]), $"up_blocks.{i}.upsamplers.0.conv", output, output, 3);
            channels = output;
        }

        h = Silu(g.GroupNorm(h, c.NormNumGroups, P("conv_norm_out.weight", ch0), P("conv_norm_out.bias", ch0), c.NormEps));
        return Conv(h, "conv_out", ch0, c.OutChannels, 3);
    }

    /// <summary>ResnetBlock2D: norm1, SiLU, conv1, + time_emb_proj(SiLU(temb)) per channel, norm2, SiLU, conv2; plus the input (conv_shortcut 1×1 when channels change).</summary>
    private Value Resnet(Value x, string p, int input, int output)
    {
        var h = Conv(Silu(Norm(x, $"{p}.norm1", input)), $"{p}.conv1", input, output, 3);
        h = h + g.Unsqueeze(Linear(Silu(_temb), $"{p}.time_emb_proj", output, c.TimeEmbedDim), 2, 3);      // (B, out, 1, 1)
        h = Conv(Silu(Norm(h, $"{p}.norm2", output)), $"{p}.conv2", output, output, 3);
        return (input == output ? x : Conv(x, $"{p}.conv_shortcut", input, output, 1)) + h;
    }

    /// <summary>diffusers' Attention with a residual: GroupNorm, tokens (B, H·W, C), heads of attention_head_dim, softmax(q·kᵀ/√d)·v, to_out.0.</summary>
    private Value Attention(Value x, string p, int channels)
    {
        int headDim = c.AttentionHeadDim ?? channels, heads = channels / headDim;
        var tokens = g.Transpose(g.Reshape(Norm(x, $"{p}.group_norm", channels), 0, channels, -1), 0, 2, 1);   // (B, T, C)
        Value Heads(Value t) => g.Transpose(g.Reshape(t, 0, -1, heads, headDim), 0, 2, 1, 3);                   // (B, nh, T, d)
        var q = Heads(Linear(tokens, $"{p}.to_q", channels, channels));
        var k = Heads(Linear(tokens, $"{p}.to_k", channels, channels));
        var v = Heads(Linear(tokens, $"{p}.to_v", channels, channels));
        var attn = g.Softmax(g.MatMul(q, g.Transpose(k, 0, 1, 3, 2)) * (1 / Math.Sqrt(headDim)), -1);
        var o = g.Reshape(g.Transpose(g.MatMul(attn, v), 0, 2, 1, 3), 0, -1, channels);                           // (B, T, C)
        var y = g.Transpose(Linear(o, $"{p}.to_out.0", channels, channels), 0, 2, 1);                              // (B, C, T)
        return g.Reshape(y, g.ShapeOf(x)) + x;
    }

    private Value Norm(Value x, string p, int channels) => g.GroupNorm(x, c.NormNumGroups, P($"{p}.weight", channels), P($"{p}.bias", channels), c.NormEps);

    private Value Silu(Value x) => x * g.Sigmoid(x);

    /// <summary>torch's Linear: x · Wᵀ + b with W stored (out, in).</summary>
    private Value Linear(Value x, string p, int output, int input) =>
        g.MatMul(x, g.Transpose(P($"{p}.weight", output, input))) + P($"{p}.bias", output);

    private Value Conv(Value x, string p, int input, int output, int kernel, int stride = 1, int? pad = null)
    {
        long k = pad ?? kernel / 2;
        // diffusers' Downsample2D with padding 0 pads one row and column at the end (F.pad(x, (0, 1, 0, 1))).
        long[] pads = stride == 2 && k == 0 ? [0, 0, 1, 1] : [k, k, k, k];
        return g.Conv(x, P($"{p}.weight", output, input, kernel, kernel), P($"{p}.bias", output), strides: [stride, stride], pads: pads);
    }
}
