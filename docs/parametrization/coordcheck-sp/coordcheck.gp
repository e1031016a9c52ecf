set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'coordcheck.png'
set multiplot layout 2,3 title 'coordinate check (sp): mean |output| against width, one line per step'
set logscale xy
set grid
set key top left reverse Left font ',7' samplen 1 spacing 0.8
set xrange [51.200000:1280.000000]
set format y '%g'
set xtics font ',8' ('64' 64, '128' 128, '256' 256, '512' 512, '1024' 1024)
set datafile separator ','
set title 'embedding'
plot 'coords_mean.csv' using 1:($2 == 0 && strcol(3) eq 'embedding' ? $4 : 1/0) with linespoints title 'step 0', 'coords_mean.csv' using 1:($2 == 1 && strcol(3) eq 'embedding' ? $4 : 1/0) with linespoints title 'step 1', 'coords_mean.csv' using 1:($2 == 2 && strcol(3) eq 'embedding' ? $4 : 1/0) with linespoints title 'step 2', 'coords_mean.csv' using 1:($2 == 3 && strcol(3) eq 'embedding' ? $4 : 1/0) with linespoints title 'step 3', 'coords_mean.csv' using 1:($2 == 4 && strcol(3) eq 'embedding' ? $4 : 1/0) with linespoints title 'step 4'
set title 'attention'
plot 'coords_mean.csv' using 1:($2 == 0 && strcol(3) eq 'attention' ? $4 : 1/0) with linespoints title 'step 0', 'coords_mean.csv' using 1:($2 == 1 && strcol(3) eq 'attention' ? $4 : 1/0) with linespoints title 'step 1', 'coords_mean.csv' using 1:($2 == 2 && strcol(3) eq 'attention' ? $4 : 1/0) with linespoints title 'step 2', 'coords_mean.csv' using 1:($2 == 3 && strcol(3) eq 'attention' ? $4 : 1/0) with linespoints title 'step 3', 'coords_mean.csv' using 1:($2 == 4 && strcol(3) eq 'attention' ? $4 : 1/0) with linespoints title 'step 4'
set title 'mlp'
plot 'coords_mean.csv' using 1:($2 == 0 && strcol(3) eq 'mlp' ? $4 : 1/0) with linespoints title 'step 0', 'coords_mean.csv' using 1:($2 == 1 && strcol(3) eq 'mlp' ? $4 : 1/0) with linespoints title 'step 1', 'coords_mean.csv' using 1:($2 == 2 && strcol(3) eq 'mlp' ? $4 : 1/0) with linespoints title 'step 2', 'coords_mean.csv' using 1:($2 == 3 && strcol(3) eq 'mlp' ? $4 : 1/0) with linespoints title 'step 3', 'coords_mean.csv' using 1:($2 == 4 && strcol(3) eq 'mlp' ? $4 : 1/0) with linespoints title 'step 4'
set title 'residual'
plot 'coords_mean.csv' using 1:($2 == 0 && strcol(3) eq 'residual' ? $4 : 1/0) with linespoints title 'step 0', 'coords_mean.csv' using 1:($2 == 1 && strcol(3) eq 'residual' ? $4 : 1/0) with linespoints title 'step 1', 'coords_mean.csv' using 1:($2 == 2 && strcol(3) eq 'residual' ? $4 : 1/0) with linespoints title 'step 2', 'coords_mean.csv' using 1:($2 == 3 && strcol(3) eq 'residual' ? $4 : 1/0) with linespoints title 'step 3', 'coords_mean.csv' using 1:($2 == 4 && strcol(3) eq 'residual' ? $4 : 1/0) with linespoints title 'step 4'
set title 'logits'
plot 'coords_mean.csv' using 1:($2 == 0 && strcol(3) eq 'logits' ? $4 : 1/0) with linespoints title 'step 0', 'coords_mean.csv' using 1:($2 == 1 && strcol(3) eq 'logits' ? $4 : 1/0) with linespoints title 'step 1', 'coords_mean.csv' using 1:($2 == 2 && strcol(3) eq 'logits' ? $4 : 1/0) with linespoints title 'step 2', 'coords_mean.csv' using 1:($2 == 3 && strcol(3) eq 'logits' ? $4 : 1/0) with linespoints title 'step 3', 'coords_mean.csv' using 1:($2 == 4 && strcol(3) eq 'logits' ? $4 : 1/0) with linespoints title 'step 4'
unset multiplot
