using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;

/// <summary>
/// The trained digit classifier as a judge of images: its ReLU layers (<c>layers.{i}</c>, weights laid out (in, out))
/// evaluated in double from the exported weights, giving the class and the penultimate features (the last hidden
/// layer, the space the Fréchet distance is measured in). Images come in the model's [−1, 1] space.
/// </summary>
sealed class MlpJudge(IReadOnlyList<(float[] Weight, float[] Bias, int In, int Out)> layers, (float[] Weight, float[] Bias, int In, int Out) head)
{
    public int FeatureSize => head.In;

    public static MlpJudge Load(string dir, MlpConfig c)
    {
        if (c.Activation != "relu") throw new NotSupportedException($"The judge evaluates ReLU MLPs, not {c.Activation}.");
        var ps = ModelFolder.ReadParameters(dir);
        var w = HfWeights.Load(Path.Combine(dir, ModelFolder.WeightsFile), ps, out _);
        float[] Get(string name) => w[ps.Select((p, i) => (p, i)).Single(x => x.p.Name == name).i];
        var layers = new List<(float[], float[], int, int)>();
        int width = c.InputSize;
        for (int i = 0; i < c.HiddenSizes.Count; i++)
        {
            layers.Add((Get($"layers.{i}.weight"), Get($"layers.{i}.bias"), width, c.HiddenSizes[i]));
            width = c.HiddenSizes[i];
        }
        return new MlpJudge(layers, (Get("head.weight"), Get("head.bias"), width, c.NumClasses));
    }

    /// <summary>Features (count × FeatureSize) and predicted classes of <paramref name="count"/> images.</summary>
    public (float[] Features, int[] Classes) Judge(float[] images, int count)
    {
        int per = images.Length / count;
        var features = new float[count * FeatureSize];
        var classes = new int[count];
        Parallel.For(0, count, n =>
        {
            var h = new double[per];
            for (int k = 0; k < per; k++) h[k] = (images[n * per + k] + 1) * 0.5;
            foreach (var layer in layers) h = Relu(Affine(h, layer));
            for (int k = 0; k < h.Length; k++) features[n * FeatureSize + k] = (float)h[k];
            var logits = Affine(h, head);
            classes[n] = Array.IndexOf(logits, logits.Max());
        });
        return (features, classes);
    }

    /// <summary>Share of images whose predicted class is their label, and the predictions.</summary>
    public (double Accuracy, int[] Classes) Accuracy(float[] images, long[] labels)
    {
        var (_, classes) = Judge(images, labels.Length);
        return (classes.Where((c, i) => c == labels[i]).Count() / (double)labels.Length, classes);
    }

    private static double[] Affine(double[] x, (float[] Weight, float[] Bias, int In, int Out) l)
    {
        var y = new double[l.Out];
        for (int o = 0; o < l.Out; o++) y[o] = l.Bias[o];
        for (int i = 0; i < l.In; i++)
        {
            double xi = x[i];
            if (xi == 0) continue;
            for (int o = 0; o < l.Out; o++) y[o] += xi * l.Weight[i * l.Out + o];
        }
        return y;
    }

    private static double[] Relu(double[] x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = Math.Max(0, x[i]);
        return x;
    }
}
