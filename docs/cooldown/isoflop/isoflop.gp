set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'isoflop.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'parameters N'
set ylabel 'loss'
plot 'isoflop.dat' index 0 with points pt 7 lc 1 title 'C = 6.00e+12', 'isoflop_fit.dat' index 0 with lines lc 1 notitle, 'isoflop.dat' index 1 with points pt 7 lc 2 title 'C = 1.20e+13', 'isoflop_fit.dat' index 1 with lines lc 2 notitle, 'isoflop.dat' index 2 with points pt 7 lc 3 title 'C = 2.40e+13', 'isoflop_fit.dat' index 2 with lines lc 3 notitle
